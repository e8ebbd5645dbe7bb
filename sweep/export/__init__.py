"""Export a chosen configuration: the compressed checkpoint and what reproduces and describes it."""

from sweep.errors import UserError


class ExportError(UserError, ValueError):
    """An export that cannot be made: no such trial, nothing complete, a bad output folder, a
    grid the checkpoint format cannot hold."""


__all__ = ["ExportError"]
