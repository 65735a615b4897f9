"""Floor 5: verdicts.  A case's run document against the analytic model and the spec's budgets
(``checks``), against a stored baseline (``baseline``), and arm against arm (``ab``)."""
