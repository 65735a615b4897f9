"""Floor 6, the pytest layer: hooks (``plugin``), spec files and case items (``items``), options
resolved CLI → env → ini (``options``), the session and what it owns (``session``), and one case
from run to result (``case_run``)."""
