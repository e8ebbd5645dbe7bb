"""Ctrl-C at the right moment (see ``InterruptGuard``)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class InterruptGuard:
    """Ctrl-C, at the right moment: inside a trial's work (which is then stored FAIL, marked
    interrupted) or between trials, but never while Optuna creates or stores a trial, which
    would leave it RUNNING or lose its values; there it waits until Optuna is done."""

    def __init__(self) -> None:
        self.pending = False
        self.deferring = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.deferring:
            self.pending = True
        else:
            raise KeyboardInterrupt

    def __enter__(self) -> InterruptGuard:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _raise_pending(self) -> None:
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Ctrl-C waits for the end of the block (Optuna creating and storing a trial)."""
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False
        self._raise_pending()

    @contextmanager
    def allowed(self) -> Iterator[None]:
        """Ctrl-C interrupts the block (a trial's work), even if it came just before."""
        self._raise_pending()
        self.deferring = False
        try:
            yield
        finally:
            self.deferring = True
