"""For tests that press Ctrl-C on a child process."""

import signal


def default_sigint() -> None:
    """``preexec_fn`` of a child that must get Ctrl-C as a terminal's foreground job does: a shell's
    background job (a CI step, ``cmd &``) inherits SIGINT ignored, and Python then installs no
    handler, so the signal would be silently dropped."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
