"""Floor 1, the foundation: what every other floor speaks.  Imports nothing of the package above it
and no torch."""
