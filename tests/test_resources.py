"""The session's one owner of what it starts: every close callback runs once, last registered first,
on close or on SIGTERM; a failing one does not stop the others."""

import os
import signal
import subprocess
import sys

from llmcomm_tests.suite.resources import SessionResources


def test_callbacks_run_once_last_first_and_a_failure_does_not_stop_the_rest(capsys):
    closed = []
    resources = SessionResources()
    resources.callback(closed.append, "fork server")
    resources.callback(lambda: 1 / 0)
    resources.callback(closed.append, "cluster")
    resources.close()
    resources.close()
    assert closed == ["cluster", "fork server"]
    assert "ZeroDivisionError" in capsys.readouterr().err


def test_close_puts_the_previous_sigterm_handler_back():
    def previous(signum, frame):
        pass

    before = signal.signal(signal.SIGTERM, previous)
    try:
        resources = SessionResources()
        resources.handle_sigterm()
        assert signal.getsignal(signal.SIGTERM) == resources._on_sigterm
        resources.close()
        assert signal.getsignal(signal.SIGTERM) is previous
    finally:
        signal.signal(signal.SIGTERM, before)


def test_sigterm_closes_everything_once_then_ends_the_process_by_the_signal(tmp_path):
    log = tmp_path / "closed.txt"
    code = ("import os, signal, time\nfrom llmcomm_tests.suite.resources import SessionResources\n"
            "r = SessionResources()\n"
            f"r.callback(lambda: open({str(log)!r}, 'a').write('closed\\n'))\n"
            "r.handle_sigterm()\nos.kill(os.getpid(), signal.SIGTERM)\ntime.sleep(30)\nprint('survived')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == -signal.SIGTERM, proc.stdout + proc.stderr
    assert log.read_text() == "closed\n" and "survived" not in proc.stdout
