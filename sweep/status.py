"""`sweep status`: a study's progress, its running trials with the age of their heartbeat (a
stale one: the worker is gone), its failures with their reasons, and its best trials."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime

import optuna
from optuna.trial import TrialState
from rich.console import Console
from rich.table import Table

from sweep.console import front_tables
from sweep.record import TrialRecord, trial_records
from sweep.report import reuse_summary, trials_frame
from sweep.run_loop import RunProgress, run_summary
from sweep.storage import GRACE_S
from sweep.storage import heartbeat_ages as stored_heartbeat_ages
from sweep.study import current_run


def print_status(study: optuna.Study, console: Console) -> None:
    """Print the study's trial counts, running and failed trials, and its Pareto front."""
    records = trial_records(study)
    states = Counter(r.state.name for r in records)
    summary = ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())) or "no trials"
    console.print(f"study [bold]{study.study_name}[/]: {summary}")
    run = current_run(study)
    if run is not None:
        console.print(run_summary(RunProgress.of(study, run), run))
    started = {t.number: t.datetime_start for t in study.get_trials(deepcopy=False)}
    running = [r for r in records if r.state == TrialState.RUNNING]
    ages = heartbeat_ages(study)
    _print_trials(
        console,
        "running",
        running,
        {
            "worker": lambda r: worker_label(r.worker),
            "started": lambda r: _clock(started[r.number]),
            "heartbeat": lambda r: _heartbeat(ages.get(r.number)),
        },
    )
    for r in running:
        age = ages.get(r.number)
        if age is not None and age > GRACE_S:
            console.print(
                f"trial {r.number}: running, no heartbeat for {_duration(age)}: its worker is "
                "gone; the next worker of this study fails it and retries its configuration"
            )
    failed = [r for r in records if r.state == TrialState.FAIL]
    _print_trials(
        console,
        "failed",
        failed,
        {"reason": lambda r: r.fail_reason or "worker stopped (no heartbeat)"},
    )

    frame = trials_frame(study)
    if frame.empty:
        return
    console.print(reuse_summary(frame))
    outside = int((~frame["feasible"]).sum())
    if outside:
        console.print(f"outside the study's constraints: {outside} complete (left off the front)")
    console.print(*front_tables(frame))


def heartbeat_ages(study: optuna.Study) -> dict[int, float]:
    """Seconds since the last heartbeat of each running trial of ``study``, by trial number, on
    the database's clock; empty when the storage keeps no heartbeats."""
    from sweep.proxy_client import ProxyStorage

    storage = getattr(study._storage, "_backend", study._storage)  # under Optuna's cache
    if isinstance(storage, ProxyStorage):
        return storage.heartbeat_ages(study._study_id)
    if isinstance(storage, optuna.storages.RDBStorage):
        return stored_heartbeat_ages(storage, study._study_id)
    return {}


def worker_label(worker: str | None) -> str:
    """A trial's worker as a user names it: ``slurm task 1234_2 on node7`` (``scancel
    1234_2`` stops it), or ``node7 pid 4242``."""
    if not worker:
        return "?"
    *task, local = worker.split(" ")
    host, pid, *_ = [*local.split(":"), "", ""]
    if len(task) == 2 and task[0] == "slurm":
        return f"slurm task {task[1]} on {host}"
    return f"{host} pid {pid}" if pid else host


def _heartbeat(age: float | None) -> str:
    if age is None:
        return "none yet"
    if age > GRACE_S:
        return f"[bold red]none for {_duration(age)}[/]"
    return f"{_duration(age)} ago"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _clock(when: datetime | None) -> str:
    return when.strftime("%H:%M:%S") if when else "?"


def _print_trials(
    console: Console,
    title: str,
    records: list[TrialRecord],
    cells: dict[str, Callable[[TrialRecord], str]],
) -> None:
    if not records:
        return
    table = Table(title=title, title_justify="left")
    for col in ("trial", "configuration", *cells):
        table.add_column(col)
    for r in records:
        table.add_row(str(r.number), r.config_key or "?", *(cell(r) for cell in cells.values()))
    console.print(table)
