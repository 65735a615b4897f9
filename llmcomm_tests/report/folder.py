"""One session at a time per report folder, and a folder known to be writable before any case runs.

A second pytest session writing into the same folder would truncate the first one's item log and
replace its report; the lock (``fcntl.flock`` on ``.llmcomm.lock``, released by the kernel when the
process ends, however it ends) turns that into a one-line refusal naming the holder.  The probe
writes and removes a small file: a read-only or full folder is said before the first case, not as
an internal error after it.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path

from llmcomm_tests.report.json_report import ReportFileError, cause

LOCK_FILENAME = ".llmcomm.lock"


class FolderBusy(ReportFileError):
    """Another session holds the report folder."""


class ReportFolder:
    """A report folder this process holds (``claim``) until ``release`` or its exit."""

    def __init__(self, path: Path, fd: int):
        self.path, self._fd = path, fd

    @classmethod
    def claim(cls, report_dir: "str | Path") -> "ReportFolder":
        """Create, lock and probe ``report_dir``; raises FolderBusy or ReportFileError (one line)."""
        path = Path(report_dir)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ReportFileError(f"cannot create the report folder {path}: {cause(exc)}") from None
        lock = path / LOCK_FILENAME
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ReportFileError(f"the report folder {path} is not writable: {cause(exc)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise FolderBusy(f"the report folder {path} is in use by another session ({holder}); give this one "
                             f"its own with --llmcomm-report-dir") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
            _probe(path)
        except OSError as exc:
            os.close(fd)
            raise ReportFileError(f"the report folder {path} is not writable: {cause(exc)}") from None
        return cls(path, fd)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None


def _probe(path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path, prefix=".llmcomm-probe-")
    try:
        os.write(fd, b"x" * 4096)
        os.fsync(fd)
    finally:
        os.close(fd)
        os.unlink(tmp)
