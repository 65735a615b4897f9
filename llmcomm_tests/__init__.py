"""llmcomm-tests: communication tests for distributed LLM inference.

The package is a house of floors; a module imports only from its own floor and the ones below
(``tests/test_architecture.py`` holds the rule):

1. ``core/``         – foundation: the communication contract (sites, op names, bus factors), the
   typed documents and their one (de)serialiser, statistics, units, text, environment facts.
2. ``engine/``, ``analytic/``, ``spec/`` – what is run and what it should cost: the engine (the
   neural network), the analytic model (formulas; runs nothing, imports no torch), and SLO specs
   (YAML → cases).
3. ``runtime/``, ``frameworks/`` – ranks at work: the launcher (one host or several nodes), the
   recorder, planted faults, clocks, one run's measurement and summaries; the engine adapters of
   other frameworks (vLLM, transformers) under the same recorder.
4. ``calibration/``  – size sweeps and the fits that turn them into hardware profiles.
5. ``judging/``, ``report/`` – checks against the model and budgets, stored baselines, the paired
   A/B gate; the verdict as JUnit, JSON, HTML and traces.
6. ``suite/``        – the pytest layer: hooks, items, options, the session and its resources.
7. ``commands/``     – the ``llmcomm`` command line: thin shells over the floors below.

Vocabulary used throughout the package:

* *engine*   – the neural network that runs (``llmcomm_tests.engine``).
* *analytic* – the closed-form communication and latency model (``llmcomm_tests.analytic``).
* *framework* – whose engine runs: ours, vLLM or transformers (``llmcomm_tests.frameworks``).
* *layout*   – a (tp, pp) split of the engine over ``tp * pp`` ranks.
* *case*     – one layout × one workload (batch, prompt_len, gen_len), the unit a test runs.
* *record*   – one communication op as a rank issued it (``llmcomm_tests.runtime.recorder``).
* *call site* – where in the engine an op is issued (``llmcomm_tests.core.call_site``).
"""

__version__ = "0.1.0"
