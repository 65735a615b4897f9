"""Wrap ``torch.distributed`` ProcessGroup methods and ``Work.wait``, and put back exactly what was
there.  The recorder and the planted faults both patch these classes; several patches stack, and
each must be undone in the reverse order of installation.

What is saved is the class's own attribute (pybind's instancemethod descriptor, read with
``inspect.getattr_static``), not ``getattr``'s unbound builtin: only the descriptor binds ``self``
again once it is put back.  torch is imported when a patch is applied, not when this module loads.
"""

from __future__ import annotations

import inspect
from typing import Callable

Wrapper = Callable[[object], Callable]  # the original method -> its replacement


class PgPatch:
    """The methods one installation replaced; ``restore`` puts them back, last replaced first."""

    def __init__(self):
        self._saved: list[tuple[type, str, object]] = []

    def wrap_method(self, method: str, make_wrapper: Wrapper) -> bool:
        """Replace ``ProcessGroup.<method>`` with ``make_wrapper(original)``; False (nothing
        replaced) where this torch release has no such method."""
        import torch.distributed as dist

        return self._wrap(dist.ProcessGroup, method, make_wrapper)

    def wrap_wait(self, make_wrapper: Wrapper) -> None:
        """Replace ``Work.wait`` with ``make_wrapper(original)``."""
        import torch.distributed as dist

        self._wrap(dist.Work, "wait", make_wrapper)

    def _wrap(self, cls: type, name: str, make_wrapper: Wrapper) -> bool:
        original = inspect.getattr_static(cls, name, None)
        if original is None:
            return False
        self._saved.append((cls, name, original))
        setattr(cls, name, make_wrapper(original))
        return True

    def restore(self) -> None:
        for cls, name, original in reversed(self._saved):
            setattr(cls, name, original)
        self._saved.clear()
