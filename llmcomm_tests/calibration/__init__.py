"""Floor 4: communication sweeps (``sweep``) and the fits that make hardware profiles of them
(``fit``, ``two_tier`` for emulated clusters).  The ``llmcomm bench-comm`` and ``llmcomm calibrate``
commands are thin shells over this."""
