"""What a pytest session starts and must not leave behind: the launcher's fork server and its
ranks, emulated clusters, A/B arm servers.  One owner, closed in one place (the plugin's
unconfigure hook) whether the session passed, failed, was interrupted or got SIGTERM.

Each resource registers its close callback when it comes up; callbacks run last registered first,
each once, and one that fails does not keep the others from running.  The runtime functions behind
them stay usable without pytest: the CLI closes what it starts itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import traceback
from typing import Callable


class SessionResources:
    def __init__(self):
        self._stack = contextlib.ExitStack()
        self._closed = False
        self._previous_sigterm = None
        self._sigterm_installed = False

    def callback(self, close: Callable, *args) -> None:
        """Run ``close(*args)`` when the session ends."""
        self._stack.callback(_reported, close, *args)

    def close(self) -> None:
        """Close every resource, last registered first; a second call does nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            self._stack.close()
        finally:
            self._restore_sigterm()

    def handle_sigterm(self) -> None:
        """Close everything on SIGTERM, then end the process as SIGTERM would.  For the process that
        owns the session (pytest's controller); ``close`` puts the previous handler back."""
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread (an embedding caller)
        self._previous_sigterm = signal.signal(signal.SIGTERM, self._on_sigterm)
        self._sigterm_installed = True

    def _on_sigterm(self, signum, frame) -> None:
        self.close()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    def _restore_sigterm(self) -> None:
        if self._sigterm_installed:
            self._sigterm_installed = False
            signal.signal(signal.SIGTERM, self._previous_sigterm if self._previous_sigterm is not None
                          else signal.SIG_DFL)


def _reported(close: Callable, *args) -> None:
    """A teardown that fails is said on stderr; the session's other resources are still closed."""
    try:
        close(*args)
    except Exception:  # noqa: BLE001 - teardown must go on
        name = getattr(close, "__qualname__", repr(close))
        sys.stderr.write(f"llmcomm: closing {name} failed:\n{traceback.format_exc()}")
