"""Where studies are kept: a SQLAlchemy URL, opened as Optuna's RDB storage.

One set of liveness constants serves Optuna's trial heartbeats and the claims of the results
table (``sweep.results``): a worker beats every ``HEARTBEAT_S`` seconds, and ``GRACE_S`` seconds
after its last beat its running trial is stale and its claim may be taken over. Every live
worker of the study looks for stale trials every ``STALE_CHECK_S`` seconds, and fails (and
retries) them: a dead worker's trial is failed at most ``DEAD_WORKER_S`` after it died, while
another worker of the study runs (else by the next one to start).
URLs are shown with their secrets masked (``display``), everywhere they are printed or logged.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote_plus

import optuna
import sqlalchemy as sa
from optuna.storages._rdb import models
from optuna.trial import TrialState
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.pool import NullPool

from sweep.errors import UserError

T = TypeVar("T")
HEARTBEAT_S = 5
GRACE_S = 20
STALE_CHECK_S = 2
# what docs/scale-out.md promises: GRACE_S, a check, and 1 s of SQLite's clock (whole
# seconds), with room
DEAD_WORKER_S = GRACE_S + HEARTBEAT_S
PROXY_SCHEME = "grpc://"  # a `sweep storage-proxy`'s address
POOL_WAIT_S = 600  # how long a request waits for a pooled connection of the proxy
STORAGE_ENV = "SWEEP_STORAGE"  # `sweep worker` reads its URL here: no password on a command line
_SQLITE = "sqlite:///"


class StorageError(UserError, RuntimeError):
    """The study's database cannot be opened or written."""


MASK = "***"
# A parameter's value is masked wherever ``name=value`` is written (a URL's query, a libpq
# connection string) when its name, percent-decoded and in any case, holds one of these: the
# secrets drivers read, such as password, passwd, pwd, sslpassword, secret, client_secret,
# token, access_token, api_key, sslkey, auth.
SECRET_NAMES = ("pass", "pwd", "secret", "token", "key", "auth", "credential")
_URL = re.compile(r"\s*[A-Za-z][\w+.-]*://")
_PARAMETER = re.compile(r"(?<![\w.%+-])(?P<name>[\w.%+-]+)=(?P<value>[^\s&'\"]*)")


def display(text: str) -> str:
    """``text`` (a URL, or a message quoting URLs and connection strings) with its secrets
    masked: the password of a URL's user info (``user:***@host``) and the value of every
    parameter whose name holds one of ``SECRET_NAMES`` (``?password=***``, ``token=***``).
    Every message that may quote a URL goes through here. It takes time linear in the text."""
    if "\n" not in text and _URL.match(text):  # a URL on its own: a space may be in it
        text = _mask_user_info(text)
    else:
        words = re.split(r"(\s+)", text)
        text = "".join(_mask_user_info(w) if "@" in w else w for w in words)
    return _PARAMETER.sub(_mask_secret_parameter, text)


def _mask_user_info(word: str) -> str:
    """``word`` with the password of its user info masked: from the ``:`` after the user (the
    first one after ``scheme://``, or in the word) to the word's last ``@``."""
    at = word.rfind("@")
    scheme = word.find("://", 0, at)
    colon = word.find(":", scheme + 3 if scheme >= 0 else 0, at)
    return word if at <= 0 or colon < 0 else word[: colon + 1] + MASK + word[at:]


def _mask_secret_parameter(match: re.Match[str]) -> str:
    name = unquote_plus(match["name"]).lower()  # as the driver reads it: pass%77ord=
    if not any(s in name for s in SECRET_NAMES):
        return match[0]
    value = match["value"]
    after = value[len(value.rstrip(":,;.)]")) :]  # the message's punctuation, not the value's
    return f"{match['name']}={MASK}{after}"


def is_proxy_url(url: str) -> bool:
    """Whether ``url`` is a storage proxy's (``sweep storage-proxy``), not a database's."""
    return url.startswith(PROXY_SCHEME)


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL; None for other databases."""
    return Path(url.removeprefix(_SQLITE)) if url.startswith(_SQLITE) else None


def check_url(url: str) -> None:
    """Refuse URLs that cannot hold a study: unparsable ones, and in-memory SQLite (each
    process would see its own empty database, and nothing would be kept)."""
    if is_proxy_url(url):
        from sweep.proxy_client import proxy_address

        proxy_address(url)
        return
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise StorageError(
            f"storage {display(url)!r} is not a database URL: use sqlite:///path/to/file.db, "
            "postgresql+psycopg2://user:password@host/database or a storage proxy's "
            "grpc://host:port"
        ) from None
    in_memory = parsed.get_backend_name() == "sqlite" and (
        parsed.database in (None, "", ":memory:") or "mode=memory" in str(parsed.query)
    )
    if in_memory:
        raise StorageError(
            f"storage {display(url)} is an in-memory SQLite database, which keeps nothing and "
            "which other workers cannot see; give a file: sqlite:///runs/NAME.db"
        )


def pooling(pool: int | None) -> dict[str, Any]:
    """SQLAlchemy's pool settings for a database server (not SQLite): ``pool`` connections at
    most, kept open (the storage proxy's); or none kept open (a worker's), so that a server's
    connection slots bound the operations running at once rather than the workers alive. A
    worker opens one per operation: a few milliseconds against trials of minutes."""
    if pool is None:
        return {"poolclass": NullPool}
    return {"pool_size": pool, "max_overflow": 0, "pool_timeout": POOL_WAIT_S}


def make_storage(
    url: str, heartbeat: bool = True, pool: int | None = None
) -> optuna.storages.BaseStorage:
    """Optuna's RDB storage on any SQLAlchemy URL, with heartbeats and retry of dead trials; or,
    at a ``grpc://`` URL, the storage proxy's (``sweep.proxy_client``).

    A SQLite file's folder is created and the file put in WAL mode with a long busy timeout, so
    a few workers on one machine do not fail with "database is locked". ``pool`` bounds the
    connections to another database (the proxy's, which serves many workers).
    """
    check_url(url)
    if is_proxy_url(url):
        from sweep.proxy_client import ProxyStorage

        return ProxyStorage(url, heartbeat)
    engine_kwargs: dict[str, Any] = {}
    path = sqlite_path(url)
    if path is None:
        engine_kwargs.update(pooling(pool))
    try:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with sqlite3.connect(path, timeout=60) as conn:
                conn.execute("PRAGMA journal_mode=WAL")
            engine_kwargs["connect_args"] = {"timeout": 60}
        kwargs: dict[str, Any] = {}
        if heartbeat:
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)
            kwargs = {"heartbeat_interval": HEARTBEAT_S, "grace_period": GRACE_S,
                      "heartbeat_stale_trial_callback": retry}  # fmt: skip
        return creating_tables(lambda: optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs,
                                                                 **kwargs))  # fmt: skip
    except Exception as err:  # SQLAlchemy and sqlite3 raise many kinds; all mean the same here
        reason = display(str(err).replace(url, display(url)).splitlines()[0])
        raise StorageError(f"cannot open study storage {display(url)}: {reason}") from None


def creating_tables(make: Callable[[], T], attempts: int = 5) -> T:
    """``make()``, which creates tables when they are missing: several processes doing so on a
    new PostgreSQL database at once race (one gets "duplicate key ... pg_type"; on SQLite "table
    ... already exists"), and the loser only has to try again, finding the tables made."""
    for attempt in range(attempts):
        try:
            return make()
        except (IntegrityError, ProgrammingError, OperationalError) as err:
            raced = "duplicate key" in str(err) or "already exists" in str(err)
            if not raced or attempt == attempts - 1:
                raise
            time.sleep(0.1 * (attempt + 1))
    raise AssertionError("unreachable")


def require_database(url: str) -> None:
    """Refuse a SQLite URL whose file does not exist (instead of creating an empty one)."""
    check_url(url)
    path = sqlite_path(url)
    if path is not None and not path.exists():
        raise StorageError(f"no study database at {display(url)}: run `make sweep` first")


def existing_storage(url: str) -> optuna.storages.BaseStorage:
    """The storage at ``url`` for reading (no heartbeat), without creating a SQLite file."""
    require_database(url)
    return make_storage(url, heartbeat=False)


def heartbeat_ages(storage: optuna.storages.RDBStorage, study_id: int) -> dict[int, float]:
    """Seconds since the last heartbeat of each running trial of the study, by trial number, on
    the database's clock (the one Optuna stamps the beats with)."""
    trials, beats = models.TrialModel, models.TrialHeartbeatModel
    query = (
        sa.select(trials.number, beats.heartbeat)
        .join(beats, beats.trial_id == trials.trial_id)
        .where(trials.study_id == study_id, trials.state == TrialState.RUNNING)
    )
    with storage.engine.connect() as conn:
        now = conn.execute(sa.select(sa.func.now())).scalar_one()
        rows = conn.execute(query).all()
    now = now.replace(tzinfo=None)  # PostgreSQL's is aware, the stored beats are not
    return {number: (now - beat).total_seconds() for number, beat in rows}


@contextmanager
def failing_stale_trials(study: optuna.Study, every_s: float = STALE_CHECK_S) -> Iterator[None]:
    """While the block runs, fail the study's trials whose worker stopped beating (and queue
    their configurations again), checking every ``every_s`` seconds. Optuna checks only when a
    worker starts a trial, which on a large model can be an hour after another worker died."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every_s):
            with suppress(Exception):  # a busy database: the next round checks again
                optuna.storages.fail_stale_trials(study)

    thread = threading.Thread(target=loop, name="fail-stale-trials", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=every_s)  # a check held up by a busy database is not waited for
