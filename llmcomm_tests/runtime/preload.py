"""Imported once by the launcher's fork server so each rank starts with torch loaded.
Imports only: running a torch op here would make forked ranks hang."""

import torch  # noqa: F401
import torch.distributed  # noqa: F401

import llmcomm_tests.engine.parallel  # noqa: F401
