"""Scale-out: how many workers one study's storage serves, on PostgreSQL directly and through
`sweep storage-proxy`.

Each simulated worker is a process that runs the path of a real one with a trial that sleeps
instead of compressing: Optuna's ask (the sampler, a new trial), the heartbeat of the trial
and of its claim, the claim on the configuration in the results table (or the wait for the
worker that holds it), the failing of stale trials every 2 s, and the tell. The space is small
enough (216 configurations) that workers ask for the same configuration at once, so the claims
are exercised. All workers start their trials together, once every one of them is ready.

A row per size and storage: ``trials`` told, ``trials_per_s`` (from the first ask to the last
tell), ``lost`` (trials not complete at the end, and claims left running), ``duplicated``
(configurations computed by two workers), ``max_db_connections`` (PostgreSQL's
``pg_stat_activity`` for the database, sampled every 0.1 s) and ``p95_ask_ms``.

Run: ``make bench-scale`` (PostgreSQL from ``--postgres`` or ``SWEEP_TEST_POSTGRES``; .ci/run
shows how to start the one on these machines). Writes ``bench-results/scale.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections import Counter
from pathlib import Path

import sqlalchemy as sa

RESULTS = Path("bench-results")
SIZES = (8, 32, 64)
TRIALS_PER_WORKER = 3
TRIAL_S = 2.0
SPACE = {"sparsity": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5], "bits": [2, 3, 4, 8, 16, 32],
         "group": [32, 64, 128, 256, 512, 1024]}  # fmt: skip


def worker(url: str, study: str, total: int, trial_s: float, folder: Path, index: int) -> None:
    """One simulated worker: trials until the study holds ``total`` complete ones; writes a
    line per trial to ``folder/worker-<index>.jsonl``."""
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.storages._heartbeat import get_heartbeat_thread
    from optuna.trial import TrialState

    from sweep.results import ResultsTable
    from sweep.storage import failing_stale_trials, make_storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage")  # we beat as optimize does
    storage = make_storage(url)
    sampler = optuna.samplers.RandomSampler(seed=index)
    loaded = optuna.load_study(study_name=study, storage=storage, sampler=sampler)
    results = ResultsTable(url)
    space = {k: CategoricalDistribution(v) for k, v in SPACE.items()}
    (folder / f"ready-{index}").touch()
    while not (folder / "go").exists():
        time.sleep(0.05)
    lines = []
    with failing_stale_trials(loaded):
        while len(loaded.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < total:
            start = time.time()
            trial = loaded.ask(space)
            asked = time.time()
            key = hashlib.sha256(json.dumps(trial.params, sort_keys=True).encode()).hexdigest()
            with get_heartbeat_thread(trial._trial_id, storage):
                claim = results.claim(key, key[:12], {}, study, trial.number)
                if claim.owned:
                    with results.beating(key):
                        time.sleep(trial_s)
                    value = sum(trial.params.values()) / 100
                    results.finish(key, {"value": value})
                else:
                    value = claim.result["value"]
            loaded.tell(trial, value)
            ask_ms = 1000 * (asked - start)
            lines.append({"trial": trial.number, "key": key, "computed": claim.owned,
                          "start": start, "ask_ms": ask_ms, "end": time.time()})  # fmt: skip
    (folder / f"worker-{index}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


class ConnectionCount:
    """The most connections PostgreSQL held on ``database`` while the block ran."""

    def __init__(self, admin_url: str, database: str) -> None:
        # each query its own transaction: PostgreSQL keeps one snapshot of the statistics per one
        self.engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        self.database = database
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        query = sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :db")
        with self.engine.connect() as conn:
            while not self._stop.wait(0.1):
                n = conn.execute(query, {"db": self.database}).scalar_one()
                self.most = max(self.most, n)

    def __enter__(self) -> ConnectionCount:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.engine.dispose()


def _database(admin_url: str) -> tuple[str, str]:
    """A fresh database beside ``admin_url``'s: (its URL, its name)."""
    name = f"sweep_scale_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return admin_url.rsplit("/", 1)[0] + f"/{name}", name


def _drop(admin_url: str, name: str) -> None:
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    engine.dispose()


def _start_proxy(database: str, pool: int) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "SWEEP_STORAGE": database}
    command = [
        sys.executable,
        "-m",
        "sweep.cli",
        "storage-proxy",
        "--port",
        "0",
        "--pool",
        str(pool),
    ]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if "grpc://" not in line:
        proc.kill()
        raise RuntimeError(f"the storage proxy did not start: {line!r}")
    return proc, "grpc://" + line.split("grpc://")[1].split()[0]


def measure(admin_url: str, workers: int, storage: str, folder: Path, pool: int,
            trial_s: float = TRIAL_S, per_worker: int = TRIALS_PER_WORKER) -> dict:  # fmt: skip
    """One row: ``workers`` simulated workers on a fresh database, directly or via a proxy."""
    import optuna
    from optuna.trial import TrialState

    from sweep.results import ResultsTable

    database, name = _database(admin_url)
    folder.mkdir(parents=True)
    proxy = None
    try:
        study = f"scale-{workers}"
        optuna.create_study(study_name=study, storage=database)
        ResultsTable(database).close()  # the table made before the workers race to
        url = database
        if storage == "proxy":
            proxy, url = _start_proxy(database, pool)
        total = workers * per_worker
        with ConnectionCount(admin_url, name) as connections:
            procs = [
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "bench.scale",
                        "--worker",
                        url,
                        study,
                        str(total),
                        str(trial_s),
                        str(folder),
                        str(i),
                    ]
                )  # fmt: skip
                for i in range(workers)
            ]
            try:
                while len(list(folder.glob("ready-*"))) < workers:
                    if any(p.poll() not in (None, 0) for p in procs):
                        raise RuntimeError("a worker failed to start (its error is above)")
                    time.sleep(0.2)
                (folder / "go").touch()
                codes = [p.wait() for p in procs]
            finally:
                for p in procs:
                    p.kill() if p.poll() is None else None
        lines = [
            json.loads(x) for f in folder.glob("worker-*.jsonl") for x in f.read_text().splitlines()
        ]
        trials = optuna.load_study(study_name=study, storage=database).get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        rows = ResultsTable(database).rows()
        computed = Counter(x["key"] for x in lines if x["computed"])
        asks = sorted(x["ask_ms"] for x in lines)
        span = max(x["end"] for x in lines) - min(x["start"] for x in lines)
        return {
            "workers": workers,
            "storage": "postgresql" if storage == "direct" else f"proxy (pool {pool} + {pool})",
            "trials": len(complete),
            "trials_per_s": round(len(complete) / span, 2),
            "lost": len(trials) - len(complete) + sum(r["status"] != "done" for r in rows),
            "duplicated": sum(n - 1 for n in computed.values()),
            "max_db_connections": connections.most,
            "p95_ask_ms": round(asks[int(0.95 * (len(asks) - 1))], 1),
            "computed": sum(computed.values()),
            "reused": len(lines) - sum(computed.values()),
            "workers_failed": sum(c != 0 for c in codes),
        }
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait(timeout=30)
        _drop(admin_url, name)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--postgres", default=os.environ.get("SWEEP_TEST_POSTGRES"))
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--pool", type=int, default=8)
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        url, study, total, trial_s, folder, index = args.worker
        worker(url, study, int(total), float(trial_s), Path(folder), int(index))
        return
    if not args.postgres:
        sys.exit(
            "bench-scale needs PostgreSQL: --postgres URL or SWEEP_TEST_POSTGRES (see .ci/run)"
        )
    from rich.console import Console
    from rich.table import Table

    rows = []
    with tempfile.TemporaryDirectory(prefix="sweep-scale-") as tmp:
        for workers in (int(s) for s in args.sizes.split(",")):
            for storage in ("direct", "proxy"):
                row = measure(
                    args.postgres, workers, storage, Path(tmp) / f"{storage}-{workers}", args.pool
                )
                print(json.dumps(row), flush=True)
                rows.append(row)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scale.json").write_text(json.dumps(rows, indent=2) + "\n")
    table = Table(title="scale-out: simulated workers, a trial of 2 s")
    for column in ("workers", "storage", "trials", "trials_per_s", "lost", "duplicated",
                   "max_db_connections", "p95_ask_ms"):  # fmt: skip
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row[c]) for c in [col.header for col in table.columns]))
    Console().print(table)


if __name__ == "__main__":
    main()
