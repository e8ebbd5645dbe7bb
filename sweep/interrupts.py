"""Ctrl-C and SIGTERM, at the right moment (see ``InterruptGuard``).

SIGTERM (what ``timeout``, systemd, SLURM and Kubernetes send) stops a command as Ctrl-C does,
raising ``Terminated``, a ``KeyboardInterrupt``: every path that stores an interrupted trial
serves both, and only the exit code differs (143 instead of 130).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM."""

    def __init__(self) -> None:
        super().__init__("SIGTERM")


def interruption(signum: int) -> KeyboardInterrupt:
    """The exception that signal ``signum`` raises."""
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated


def terminate_as_interrupt() -> None:
    """From now on SIGTERM raises ``Terminated`` in the main thread, as SIGINT raises
    ``KeyboardInterrupt``, instead of ending the process on the spot."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)


class InterruptGuard:
    """Ctrl-C or SIGTERM, at the right moment: inside a trial's work (which is then stored FAIL,
    marked interrupted) or between trials, but never while Optuna creates or stores a trial,
    which would leave it RUNNING or lose its values; there it waits until Optuna is done. Once
    one has been raised, later ones are only remembered: they would cut short the storing of the
    interrupted trial."""

    def __init__(self) -> None:
        self.pending: int | None = None  # the signal that came while deferring
        self.deferring = False
        self.stopping = False  # an interruption has been raised
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.deferring or self.stopping:
            self.pending = self.pending or signum
        else:
            self.stopping = True
            raise interruption(signum)

    def __enter__(self) -> InterruptGuard:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            if previous is not None:  # None: set outside Python, cannot be put back
                signal.signal(signum, previous)

    def _raise_pending(self) -> None:
        if self.pending is not None and not self.stopping:
            signum, self.pending = self.pending, None
            self.stopping = True
            raise interruption(signum)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Interruptions wait for the end of the block (Optuna creating and storing a trial)."""
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False
        self._raise_pending()

    @contextmanager
    def allowed(self) -> Iterator[None]:
        """Interruptions interrupt the block (a trial's work), even one that came just before."""
        self._raise_pending()
        self.deferring = False
        try:
            yield
        finally:
            self.deferring = True
