"""llmcomm-tests: communication tests for distributed LLM inference.

Vocabulary used throughout the package:

* *engine*   – the neural network that runs (``llmcomm_tests.engine``).
* *analytic* – the closed-form communication and latency model (``llmcomm_tests.analytic``).
* *layout*   – a (tp, pp) split of the engine over ``tp * pp`` ranks.
* *case*     – one layout × one workload (batch, prompt_len, gen_len), the unit a test runs.
* *record*   – one communication op as a rank issued it (``llmcomm_tests.record``).
"""

__version__ = "0.1.0"
