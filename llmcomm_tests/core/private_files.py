"""Private folders and files for a tool that may run as root next to other users (docs/security.md).

A folder this tool keeps state or results in is trusted only when it is a real folder (not a
symlink), owned by this process's user and closed to everyone else (no group or other bits): it
is opened with ``O_NOFOLLOW | O_DIRECTORY`` and checked with ``fstat`` on that descriptor, so a
rename or a symlink swapped in after the check changes nothing.  This is what pytest's own temp
root does since 6.2.3 (CVE-2025-71176).  Files inside are created with ``O_CREAT | O_EXCL |
O_NOFOLLOW`` and mode 0600: a planted file or symlink makes the creation fail instead of being
followed or overwritten.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path


class UnsafePath(RuntimeError):
    """A folder or file that another user could have planted or can change; the message is one line."""


def check_private_dir(path: "str | Path", *, create: bool = True) -> Path:
    """``path`` as a private folder of this user, made (mode 0700) when missing and ``create``.

    Refused with :class:`UnsafePath`: a symlink, not a folder, another owner, or any group/other
    permission bit."""
    path = Path(path)
    if create:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except FileNotFoundError:
            raise UnsafePath(f"{path}: its parent folder does not exist") from None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY)
    except OSError as exc:
        why = "a symlink or not a folder" if os.path.islink(path) or os.path.exists(path) else exc.strerror
        raise UnsafePath(f"{path}: refused as private state: {why}") from None
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if st.st_uid != os.geteuid():
        raise UnsafePath(f"{path}: refused as private state: owned by uid {st.st_uid}, not {os.geteuid()} "
                         f"(another user may have made it; remove it or pick another place)")
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise UnsafePath(f"{path}: refused as private state: mode {stat.S_IMODE(st.st_mode):04o} lets others in "
                         f"(needs 0700)")
    return path


def make_private_subdir(parent: "str | Path", prefix: str) -> Path:
    """A fresh folder (mode 0700, a random name, mkdtemp) inside ``parent``, which may be shared:
    nothing that was there before is used."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir=str(parent)))


def create_new(path: "str | Path", mode: int = 0o600) -> int:
    """A descriptor of a file created here and now: never an existing file, never through a symlink."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)


def write_new(path: "str | Path", text: str) -> None:
    """Write ``text`` to a file that must not exist yet (:func:`create_new`)."""
    with os.fdopen(create_new(path), "w") as f:
        f.write(text)


def open_new(path: "str | Path", mode: str = "w"):
    """A file object on a file created by :func:`create_new`."""
    return os.fdopen(create_new(path), mode)


def read_regular(path: "str | Path") -> str:
    """The text of a regular file, not followed through a symlink."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd) as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise UnsafePath(f"{path}: not a regular file")
        return f.read()


def replace_atomically(path: "str | Path", write, *, prefix: str = ".llmcomm-", mode: int = 0o644) -> Path:
    """``write(tmp)`` a temporary file beside ``path`` (made by ``mkstemp``: ``O_EXCL``, never a planted
    file or symlink), then rename it over ``path``: a reader sees the old file or the new one, never
    half of one.  On failure the old file stays, the temporary file goes and the OSError propagates.
    ``mode``: reports are 0644, so CI artifact uploaders running as another user can read them."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def write_text_atomically(path: "str | Path", text: str, *, prefix: str = ".llmcomm-", mode: int = 0o644) -> Path:
    """``text`` as the whole of ``path``, flushed to disk before it replaces the old file."""
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    return replace_atomically(path, write, prefix=prefix, mode=mode)
