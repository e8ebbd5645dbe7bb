"""What the tool tells its user while it works, as callbacks.

The services (``sweep.launch``, ``sweep.export.service``) and the worker loop
(``sweep.run_loop``, ``sweep.objective``) report through an ``Events`` object and never print.
This base says nothing; ``sweep.console.ConsoleEvents`` shows it on a terminal or in a log;
tests may record it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sweep.compress.config import CompressionConfig
    from sweep.evaluation.measurement import Measurement


class Events:
    """Every method does nothing; override those you want to show."""

    def note(self, text: str) -> None:
        """A line worth showing (``text`` may hold rich markup)."""

    @contextmanager
    def busy(self, text: str) -> Iterator[None]:
        """Something slow (loading a model, evaluating the base model) runs in the block."""
        yield

    def trials_started(self, done: int, target: int) -> None:
        """A worker starts its loop: its run has computed ``done`` of ``target`` new
        configurations."""

    def trials_progress(self, done: int, target: int) -> None:
        """The run has now computed ``done`` new configurations."""

    def trial_phase(self, number: int, config: CompressionConfig, phase: str) -> None:
        """Trial ``number`` enters ``phase`` ("compress", "evaluate"...)."""

    def trial_measured(self, number: int, config: CompressionConfig, m: Measurement) -> None:
        """Trial ``number`` computed ``config``."""

    def trial_reused(self, number: int, config: CompressionConfig) -> None:
        """Trial ``number`` found ``config`` computed before and copied its measurement."""

    def trial_failed(self, number: int, config: CompressionConfig, reason: str) -> None:
        """Trial ``number`` raised; it is stored FAIL with ``reason``."""

    def trials_finished(self, done: int, seconds: float) -> None:
        """A worker's loop ends, its run having computed ``done`` new configurations."""
