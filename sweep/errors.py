"""The one kind of error a user is meant to read: bad input, reported in one line.

Every module raises its own subclass (``SpecError``, ``StorageError``, ``ModelLoadError``...), so
that tests and callers can tell them apart; the command line catches ``UserError`` alone, prints
its message and exits with code 2, having written nothing.
"""

import errno


class UserError(Exception):
    """Input that cannot be used; the message names what is wrong and what is allowed."""


__all__ = ["UserError", "disk_full"]


def disk_full(err: BaseException) -> bool:
    """Whether ``err`` (or what caused it) says that a disk or a quota is full."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [err]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "database or disk is full" in str(e) or "No space left on device" in str(e):
            return True
        todo += [e.__cause__, e.__context__, getattr(e, "orig", None)]
    return False
