"""Imported once by the launcher's fork server so each rank starts with torch loaded.
Imports only: running a torch op here would make forked ranks hang.

It also removes the launcher's multiprocessing temporary folder (``pymp-*``, which holds the fork
server's socket) when the server ends because its launcher died without cleaning up (SIGKILL).  A
launcher that stops the server itself says so first (``STOPPING``) and removes the folder at its
own exit."""

import atexit
import os
import shutil
import time

import torch  # noqa: F401
import torch.distributed  # noqa: F401

import llmcomm_tests.engine.parallel  # noqa: F401

LAUNCHER_TEMP_ENV = "LLMCOMM_LAUNCHER_TEMPDIR"
STOPPING = ".llmcomm-stopping"  # in the folder: the launcher stops the server and cleans up itself
REPARENT_WAIT_S = 2.0  # the server sees its pipe close a moment before the kernel reparents it
_launcher = os.getppid()


def _remove_orphaned_temp_folder() -> None:
    folder = os.environ.get(LAUNCHER_TEMP_ENV)
    if not folder or not os.path.basename(folder).startswith("pymp-"):
        return
    deadline = time.monotonic() + REPARENT_WAIT_S
    while os.getppid() == _launcher and time.monotonic() < deadline:
        if os.path.exists(os.path.join(folder, STOPPING)):
            return
        time.sleep(0.02)
    if os.getppid() != _launcher:
        shutil.rmtree(folder, ignore_errors=True)


atexit.register(_remove_orphaned_temp_folder)
