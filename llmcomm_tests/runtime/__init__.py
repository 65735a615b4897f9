"""Floor 3, ranks at work: launching ranks (forked here, or torchrun on several nodes), recording
every communication call, planting faults, aligning clocks, and turning one run into a run document."""
