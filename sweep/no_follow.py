"""Writing a file that never goes through a symbolic link: not the file's, nor its folder's (a
link planted at ``runs/<study>-slurm`` would send a secret, or a script, elsewhere)."""

from __future__ import annotations

import os
from pathlib import Path

from sweep.errors import UserError

PRIVATE = 0o600
SHARED = 0o644


class LinkRefused(UserError):
    """A file or folder to write is a symbolic link."""


def refuse_links(*paths: Path) -> None:
    """Refuse any of ``paths`` that is a symbolic link (before anything is written)."""
    for where in paths:
        if where.is_symlink():
            raise LinkRefused(f"{where} is a symbolic link: sweep does not write through one")


def write_text(path: Path, text: str, mode: int = SHARED) -> None:
    """Write ``text`` to ``path`` with ``mode`` from its first byte (an existing file gets the
    mode before it is written), refusing a symbolic link at the file or at its folder."""
    refuse_links(path.parent, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    except OSError as err:  # ELOOP: a link planted since the check
        raise LinkRefused(f"cannot write {path}: {err.strerror}") from None
    try:
        os.fchmod(fd, mode)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
