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


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the session's main thread is: pytest ends the session as it does on
    Ctrl-C (teardowns, reports with ``complete: false``), and the process then ends by SIGTERM."""

    def __str__(self) -> str:
        return "SIGTERM: the session was stopped; its reports say complete: false"


class SessionResources:
    def __init__(self):
        self._stack = contextlib.ExitStack()
        self._closed = False
        self._previous_sigterm = None
        self._sigterm_installed = False
        self._interrupt = False
        self.terminated = False  # a SIGTERM arrived (``handle_sigterm(interrupt=True)``)

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

    def handle_sigterm(self, interrupt: bool = False) -> None:
        """Close everything on SIGTERM, then end the process as SIGTERM would.  For the process that
        owns the session (pytest's controller); ``close`` puts the previous handler back.

        ``interrupt``: after closing, raise ``Terminated`` (a KeyboardInterrupt) in the main thread
        instead, so that the session can still write its reports; ``end_if_terminated`` then ends
        the process by the signal.  Further SIGTERMs meanwhile are ignored: the reports come next."""
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread (an embedding caller)
        self._interrupt = interrupt
        self._previous_sigterm = signal.signal(signal.SIGTERM, self._on_sigterm)
        self._sigterm_installed = True

    def _on_sigterm(self, signum, frame) -> None:
        if self.terminated:
            return
        self.terminated = True
        self.close()
        if self._interrupt:
            signal.signal(signum, signal.SIG_IGN)  # until the reports are written
            raise Terminated()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    def end_if_terminated(self) -> None:
        """After a SIGTERM turned into ``Terminated``: end the process by SIGTERM, so that whoever
        sent it sees the signal's exit status."""
        if self.terminated:
            # Ending by a signal skips the exit handlers still to run: multiprocessing's removes its
            # pymp-* temporary folder.
            util = sys.modules.get("multiprocessing.util")
            if util is not None and hasattr(util, "_exit_function"):
                try:
                    util._exit_function()
                except Exception:  # noqa: BLE001 - the signal must still end the process
                    pass
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    def _restore_sigterm(self) -> None:
        if self._sigterm_installed and not (self.terminated and self._interrupt):
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
