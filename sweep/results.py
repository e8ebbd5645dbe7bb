"""A table of computed configurations beside Optuna's, so that each is computed once.

A row is keyed by a hash of everything that determines a result: the content of the model, its
tokenizer, the calibration set and the tasks, the evaluation's settings, the canonical
compression config and the engine's version. A worker
*claims* a key before computing it; a second worker asking for the same key waits for the
result instead of computing it again, or takes the claim over when the first one stopped
beating (it died). Rows live in the study's own database (any SQLAlchemy URL).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from sweep.storage import GRACE_S, HEARTBEAT_S, creating_tables, is_proxy_url, pooling

metadata = sa.MetaData()
results_table = sa.Table(
    "sweep_results",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("config_key", sa.String(200), nullable=False),
    sa.Column("context", sa.Text, nullable=False),  # what besides the config the key covers
    sa.Column("status", sa.String(16), nullable=False),  # running | done | failed
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("heartbeat", sa.DateTime, nullable=False),
    sa.Column("result", sa.Text),  # JSON of the measurement (record.Measurement.to_dict)
    sa.Column("reason", sa.Text),
    sa.Column("study", sa.String(200)),
    sa.Column("trial", sa.Integer),
)


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def worker_id() -> str:
    """This worker's name in claims and trials: host, process and thread, after the SLURM array
    task it runs as (``slurm 1234_2``), where it runs as one."""
    local = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
    task = slurm_task()
    return f"slurm {task} {local}" if task else local


def slurm_task() -> str | None:
    """The SLURM job (``1234``) or array task (``1234_2``) this process runs in, if any."""
    env = os.environ
    array, index = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    if array and index:
        return f"{array}_{index}"
    return env.get("SLURM_JOB_ID")


@dataclass
class Claim:
    """The answer to "may I compute this key?": yes (``owned``), or here is its ``result``."""

    key: str
    owned: bool
    result: dict[str, Any] | None = None


class SqlResults:
    """The rows of ``sweep_results`` in a database, by SQLAlchemy: the five operations the
    claims are made of, each one statement. ``pool`` bounds the connections (the storage
    proxy, which serves many workers, holds one such store)."""

    def __init__(self, url: str, pool: int | None = None) -> None:
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 60}
        else:
            kwargs.update(pooling(pool))
        self.engine = sa.create_engine(url, **kwargs)
        creating_tables(lambda: metadata.create_all(self.engine, checkfirst=True))

    def insert(self, values: dict[str, Any]) -> bool:
        """Add a row; False when its key is taken."""
        try:
            with self.engine.begin() as conn:
                conn.execute(results_table.insert().values(**values))
        except IntegrityError:
            return False
        return True

    def get(self, key: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(results_table).where(results_table.c.key == key)).first()
        return None if row is None else row._asdict()

    def swap(self, key: str, owner: str, heartbeat: datetime, values: dict[str, Any]) -> bool:
        """Set ``values`` on the row if it is still as read (owner and last beat); True if so."""
        t = results_table.c
        where = (t.key == key, t.owner == owner, t.heartbeat == heartbeat)
        with self.engine.begin() as conn:
            done = conn.execute(results_table.update().where(*where).values(**values))
        return done.rowcount == 1

    def update_owned(self, key: str, owner: str, values: dict[str, Any]) -> None:
        """Set ``values`` on the row if ``owner`` holds it."""
        t = results_table.c
        with self.engine.begin() as conn:
            conn.execute(
                results_table.update().where(t.key == key, t.owner == owner).values(**values)
            )

    def rows(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [r._asdict() for r in conn.execute(sa.select(results_table))]

    def close(self) -> None:
        self.engine.dispose()


def results_store(url: str) -> SqlResults:
    """The rows of the study at ``url``: in its database, or through the storage proxy at a
    ``grpc://`` URL."""
    if not is_proxy_url(url):
        return SqlResults(url)
    from sweep.proxy_client import GrpcResults

    return GrpcResults(url)


class ResultsTable:
    """Claim, fill and read rows of ``sweep_results`` in the study's storage at ``url``."""

    def __init__(
        self,
        url: str,
        stale_after_s: float = GRACE_S,
        poll_s: float = HEARTBEAT_S / 2,
        owner: str | None = None,
    ) -> None:
        self.store = results_store(url)
        self.stale_after = timedelta(seconds=stale_after_s)
        self.poll_s = poll_s
        self.owner = owner or worker_id()

    def get(self, key: str) -> dict[str, Any] | None:
        return self.store.get(key)

    def claim(
        self,
        key: str,
        config_key: str,
        context: dict,
        study: str,
        trial: int,
        on_wait: Callable[[str], None] = lambda owner: None,
    ) -> Claim:
        """Own ``key``, or wait until its owner stores a result (or dies, and take it over).
        ``on_wait(owner)`` is called once when the claim is held by another live worker."""
        told = False
        while True:
            row = dict(
                key=key, config_key=config_key, context=json.dumps(context), status="running",
                owner=self.owner, heartbeat=_now(), study=study, trial=trial,
            )  # fmt: skip
            if self.store.insert(row):
                return Claim(key, owned=True)
            row = self.get(key)
            if row is None:
                continue  # removed in between: try again
            if row["status"] == "done":
                return Claim(key, owned=False, result=json.loads(row["result"]))
            stale = _now() - row["heartbeat"] > self.stale_after
            if row["status"] == "failed" or stale:
                if self._take_over(row, study, trial):
                    return Claim(key, owned=True)
                continue
            if not told:
                on_wait(row["owner"])
                told = True
            time.sleep(self.poll_s)

    def _take_over(self, row: dict, study: str, trial: int) -> bool:
        """Compare-and-swap the claim from a dead or failed owner; True if this worker won."""
        values = dict(status="running", owner=self.owner, heartbeat=_now(), study=study,
                      trial=trial, reason=None)  # fmt: skip
        return self.store.swap(row["key"], row["owner"], row["heartbeat"], values)

    def reopen(self, claim: Claim, study: str, trial: int) -> Claim:
        """Take back a computed row whose result falls short for this study (a trial that
        staged evaluation stopped against another study's front): own it, or, when another
        worker took it first, wait for that worker's result as ``claim`` does."""
        row = self.get(claim.key)
        if row is not None and row["status"] == "done" and self._take_over(row, study, trial):
            return Claim(claim.key, owned=True)
        if row is None:
            raise RuntimeError(f"result {claim.key} disappeared while being reopened")
        return self.claim(claim.key, row["config_key"], json.loads(row["context"]), study, trial)

    def beat(self, key: str) -> None:
        self.store.update_owned(key, self.owner, {"heartbeat": _now()})

    @contextmanager
    def beating(self, key: str, every_s: float = HEARTBEAT_S) -> Iterator[None]:
        """Keep the claim on ``key`` alive while the body runs."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(every_s):
                self.beat(key)

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def finish(self, key: str, result: dict[str, Any]) -> None:
        self._close(key, status="done", result=json.dumps(result))

    def fail(self, key: str, reason: str) -> None:
        self._close(key, status="failed", reason=reason)

    def _close(self, key: str, **values: Any) -> None:
        self.store.update_owned(key, self.owner, {"heartbeat": _now(), **values})

    def rows(self) -> list[dict[str, Any]]:
        return self.store.rows()

    def close(self) -> None:
        self.store.close()
