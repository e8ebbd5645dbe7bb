"""`sweep status`: a study's progress, its failures with their reasons, and its best trials."""

from __future__ import annotations

from collections import Counter

import optuna
from optuna.trial import TrialState
from rich.console import Console
from rich.table import Table

from sweep.report import front_table, trials_frame
from sweep.study import TARGET_ATTR, StorageError, make_storage


def print_status(url: str, name: str, console: Console) -> None:
    if url.startswith("sqlite:///"):
        from pathlib import Path

        if not Path(url.removeprefix("sqlite:///")).exists():
            raise StorageError(f"no study database at {url}")
    storage = make_storage(url, heartbeat=False)
    names = sorted(s.study_name for s in storage.get_all_studies())
    if name not in names:
        raise StorageError(f"no study {name!r} in {url}; it has: {names}")
    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state.name for t in trials)
    target = study.user_attrs.get(TARGET_ATTR)
    summary = ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())) or "no trials"
    console.print(f"study [bold]{name}[/] on {url}: {summary}; target {target} complete")

    running = [t for t in trials if t.state == TrialState.RUNNING]
    if running:
        table = Table(title="running", title_justify="left")
        for col in ("trial", "configuration", "started"):
            table.add_column(col)
        for t in running:
            started = t.datetime_start.strftime("%H:%M:%S") if t.datetime_start else "?"
            table.add_row(str(t.number), t.user_attrs.get("config_key", "?"), started)
        console.print(table)

    failed = [t for t in trials if t.state == TrialState.FAIL]
    if failed:
        table = Table(title="failed", title_justify="left")
        for col in ("trial", "configuration", "reason"):
            table.add_column(col)
        for t in failed:
            reason = t.user_attrs.get("fail_reason") or t.system_attrs.get(
                "fail_reason", "worker stopped (no heartbeat)"
            )
            table.add_row(str(t.number), t.user_attrs.get("config_key", "?"), reason)
        console.print(table)

    frame = trials_frame(study)
    if not frame.empty:
        console.print(front_table(frame))
