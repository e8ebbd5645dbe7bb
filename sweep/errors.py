"""The one kind of error a user is meant to read: bad input, reported in one line.

Every module raises its own subclass (``SpecError``, ``StorageError``, ``ModelLoadError``...), so
that tests and callers can tell them apart; the command line catches ``UserError`` alone, prints
its message and exits with code 2, having written nothing. A full disk is the other error a user
must be told of in one line (``disk_full``, ``disk_full_message``).
"""

from __future__ import annotations

import errno
from collections.abc import Iterator


class UserError(Exception):
    """Input that cannot be used; the message names what is wrong and what is allowed."""


class TrialError(RuntimeError):
    """A trial that produced no usable result (NaN scores, a broken layer...): stored FAIL with
    its reason, and the run goes on."""


class DiskFullError(OSError):
    """A write that found its disk full; the message starts "no space left on the disk" and
    says what to free."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return str(self.strerror)


__all__ = ["DiskFullError", "TrialError", "UserError", "disk_full", "disk_full_message"]


def _chain(err: BaseException) -> Iterator[BaseException]:
    """``err`` and every error that caused it (or was being handled when it was raised)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [err]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__, getattr(e, "orig", None)]


def disk_full(err: BaseException) -> bool:
    """Whether ``err`` (or what caused it) says that a disk or a quota is full."""
    for e in _chain(err):
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "database or disk is full" in str(e) or "No space left on device" in str(e):
            return True
    return False


def disk_full_message(err: BaseException) -> str:
    """The line that tells a user of the full disk behind ``err``: the failing write's own
    advice where it gives one (a ``DiskFullError``), else what the error says, cut short."""
    for e in _chain(err):
        if isinstance(e, DiskFullError):
            return f"{e}; complete trials are kept"
    from sweep.storage import display  # storage's errors are UserErrors: imported here

    said = display(" ".join(str(err).split()))[:200]  # masked before it is cut
    return (
        f"no space left on the disk ({type(err).__name__}: {said}); free some space and run "
        "again: complete trials are kept"
    )
