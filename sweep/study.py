"""The Optuna study: storage, sampler, the stored spec, the base reference, and the trial loop.

Several workers (processes, on one machine or many) may run the same study through its
storage. Each trial asks the shared results table (``sweep.results``) before computing, so a
configuration is computed once; heartbeats mark a dead worker's trial failed and retry its
configuration; a worker stops when the study holds its target number of complete trials.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sweep.compress import CompressionConfig
from sweep.grid import INTERRUPTED_ATTR, queue_missing, space_covered
from sweep.results import Claim, ResultsTable, result_key
from sweep.space import suggest_config
from sweep.spec import StudySpec, parse_spec
from sweep.trial import BaseReference, TrialError, TrialResult, TrialRunner

OBJECTIVE_LABELS = {"srcr": "SrCr", "sr": "Sr", "tcr": "TCr", "real_ratio": "compression ratio"}
BASE_ATTR = "base_reference"
SPEC_ATTR = "spec"
TARGET_ATTR = "target_complete"
HEARTBEAT_S = 5
GRACE_S = 20
# the parts of a spec that a stored study must keep: they define its trials' meaning
PINNED_FIELDS = ("model", "dtype", "calibration", "evaluation", "search", "objectives")


class StorageError(RuntimeError):
    """The study's database cannot be opened or written."""


class SpecChangedError(ValueError):
    """A study is re-run with a spec that changes what its stored trials mean."""


def _sqlite_path(url: str) -> Path | None:
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


def make_storage(url: str, heartbeat: bool = True) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage on any SQLAlchemy URL, with heartbeats and retry of dead trials.

    A SQLite file's folder is created and the file put in WAL mode with a long busy timeout, so
    a few workers on one machine do not fail with "database is locked".
    """
    engine_kwargs: dict[str, Any] = {}
    path = _sqlite_path(url)
    try:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with sqlite3.connect(path, timeout=60) as conn:
                conn.execute("PRAGMA journal_mode=WAL")
            engine_kwargs["connect_args"] = {"timeout": 60}
        kwargs: dict[str, Any] = {}
        if heartbeat:
            kwargs = {
                "heartbeat_interval": HEARTBEAT_S,
                "grace_period": GRACE_S,
                "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=3
                ),
            }
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
    except Exception as err:  # SQLAlchemy and sqlite3 raise many kinds; all mean the same here
        raise StorageError(f"cannot open study storage {url}: {err}") from None


def require_database(url: str) -> None:
    """Refuse a SQLite URL whose file does not exist (instead of creating an empty one)."""
    path = _sqlite_path(url)
    if path is not None and not path.exists():
        raise StorageError(f"no study database at {url}: run `make sweep` first")


def existing_storage(url: str) -> optuna.storages.RDBStorage:
    """The storage at ``url`` for reading (no heartbeat), without creating a SQLite file."""
    require_database(url)
    return make_storage(url, heartbeat=False)


def load_existing_study(url: str, name: str) -> optuna.Study:
    """A study that must already exist; a clear error when its storage or the study is missing."""
    storage = existing_storage(url)
    names = sorted(s.study_name for s in storage.get_all_studies())
    if name not in names:
        raise StorageError(f"no study {name!r} in {url}; it has: {names}")
    return optuna.load_study(study_name=name, storage=storage)


def make_sampler(spec: StudySpec, worker: int = 0) -> optuna.samplers.BaseSampler:
    """The spec's sampler; each worker gets its own seed so that they do not propose alike."""
    seed = None if spec.sampler.seed is None else spec.sampler.seed + worker
    name = spec.sampler.name
    # TPE, NSGA-II and GP read each trial's constraints (Trial.set_constraint) on their own.
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "gp":
        # The space is conditional (no order without both steps...): GP models the parameters
        # every trial has and samples the others independently, by design; its per-trial
        # warning about that is noise.
        return optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False)
    # random; and grid, whose plan is a queue of trials (sweep.grid), one per distinct
    # configuration (a cartesian grid over the parameters would also visit points that differ
    # only in parameters without effect): the sampler only fills in when the queue runs dry.
    return optuna.samplers.RandomSampler(seed=seed)


def _pinned(spec: StudySpec) -> dict[str, Any]:
    data = spec.model_dump(mode="json")
    return {k: data[k] for k in PINNED_FIELDS}


def _differences(old: Any, new: Any, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _differences(old.get(k), new.get(k), f"{path}.{k}" if path else k)
        return out
    return [] if old == new else [f"{path}: {json.dumps(old)} -> {json.dumps(new)}"]


def check_spec_unchanged(study: optuna.Study, spec: StudySpec) -> None:
    stored = study.user_attrs.get(SPEC_ATTR)
    if stored is None:
        return
    changes = _differences(_pinned(parse_spec(stored)), _pinned(spec))
    if changes:
        lines = "\n".join(f"  {c}" for c in changes)
        raise SpecChangedError(
            f"study {study.study_name!r} was created with another spec; what changed:\n{lines}\n"
            "Restore those fields, or start a new study with --study-name NEW_NAME."
        )


def preflight(spec: StudySpec, url: str) -> None:
    """Fail early on a storage that cannot be used or a stored study with another spec.

    Writes nothing: a missing SQLite file is only checked to be creatable.
    """
    path = _sqlite_path(url)
    if path is not None and not path.exists():
        parent = path.parent
        while not parent.exists():
            parent = parent.parent
        if not os.access(parent, os.W_OK):
            raise StorageError(f"cannot create study storage {url}: {parent} is not writable")
        return
    if path is not None and (not os.access(path, os.W_OK) or not path.stat().st_mode & 0o222):
        raise StorageError(f"study storage {url} is read-only (no write permission)")
    storage = make_storage(url, heartbeat=False)
    if spec.name in {s.study_name for s in storage.get_all_studies()}:
        check_spec_unchanged(optuna.load_study(study_name=spec.name, storage=storage), spec)


def open_study(
    spec: StudySpec, storage_url: str, name: str | None = None, worker: int = 0
) -> optuna.Study:
    """Create the study, or load it if it exists: re-running continues the same study.

    A stored study keeps its spec; re-running it with a spec that changes the meaning of its
    trials (model, data, tasks, search space, objectives) is refused with the differences.
    """
    storage = make_storage(storage_url)
    study_name = name or spec.name
    exists = study_name in {s.study_name for s in storage.get_all_studies()}
    if exists:
        study = optuna.load_study(
            study_name=study_name, storage=storage, sampler=make_sampler(spec, worker)
        )
        if len(study.directions) != len(spec.objectives):
            raise SpecChangedError(
                f"study {study_name!r} has {len(study.directions)} objectives, the spec "
                f"{len(spec.objectives)}; start a new study with --study-name NEW_NAME"
            )
        check_spec_unchanged(study, spec)
    else:
        study = optuna.create_study(
            study_name=study_name,
            storage=storage,
            sampler=make_sampler(spec, worker),
            directions=["maximize"] * len(spec.objectives),
        )
        study.set_metric_names([OBJECTIVE_LABELS[o] for o in spec.objectives])
    if study.user_attrs.get(SPEC_ATTR) is None:
        study.set_user_attr(SPEC_ATTR, spec.model_dump(mode="json"))
    return study


def stored_spec(study: optuna.Study) -> StudySpec:
    data = study.user_attrs.get(SPEC_ATTR)
    if data is None:
        raise StorageError(f"study {study.study_name!r} holds no sweep spec")
    return parse_spec(data, f"study {study.study_name}")


def stored_base(study: optuna.Study) -> BaseReference | None:
    data = study.user_attrs.get(BASE_ATTR)
    return BaseReference(**data) if data else None


def store_base(study: optuna.Study, base: BaseReference) -> None:
    study.set_user_attr(BASE_ATTR, asdict(base))


def count(study: optuna.Study, *states: TrialState) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


class Surplus(optuna.TrialPruned):
    """This trial would take the study past its target; it is stored PRUNED, computing nothing."""


class Objective:
    """Optuna's objective: admit the trial, pick a configuration, compute it once, score it."""

    def __init__(
        self,
        spec: StudySpec,
        runner: TrialRunner,
        base: BaseReference,
        results: ResultsTable,
        context: dict[str, Any],
        target: int,
        console: Console,
        progress: Progress | None = None,
        task_id: Any = None,
    ) -> None:
        self.spec = spec
        self.runner = runner
        self.base = base
        self.results = results
        self.context = context
        self.target = target
        self.console = console
        self.progress = progress
        self.task_id = task_id

    def _admit(self, trial: optuna.Trial) -> None:
        """Trials are admitted in number order until the target is reached."""
        ahead = [
            t
            for t in trial.study.get_trials(
                deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)
            )
            if t.state == TrialState.COMPLETE or t.number < trial.number
        ]
        if len(ahead) >= self.target:
            trial.set_user_attr("surplus", True)
            raise Surplus(f"{len(ahead)} trials complete or running, target {self.target}")

    def _phase(self, number: int, config: CompressionConfig):
        def show(phase: str) -> None:
            if self.progress is not None:
                self.progress.update(
                    self.task_id, description=f"trial {number} · {phase} · {config.key()}"
                )

        return show

    def _values(self, attrs: dict[str, Any]) -> tuple[float, ...]:
        return tuple(float(attrs[o]) for o in self.spec.objectives)

    def _record(self, trial: optuna.Trial, attrs: dict[str, Any]) -> None:
        for name, value in attrs.items():
            trial.set_user_attr(name, value)
        metrics = {k: attrs[k] for k in ("tcr", "real_ratio", "sr")}
        for bound, value in self.spec.constraints.violations(metrics).items():
            trial.set_constraint(bound, value)

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        self._admit(trial)
        config = suggest_config(trial, self.spec.search)
        key = config.key()
        trial.set_user_attr("config_key", key)
        trial.set_user_attr("config", config.to_dict())
        trial.set_user_attr("worker", self.results.owner)
        rkey = result_key(self.context, config)
        claim: Claim = self.results.claim(
            rkey, key, self.context, trial.study.study_name, trial.number
        )
        if not claim.owned:
            attrs = dict(claim.result)
            self._record(trial, attrs)
            trial.set_user_attr("reused", True)
            self.console.print(f"  trial {trial.number}: {key}: computed before, result reused")
            return self._values(attrs)
        try:
            with self.results.beating(rkey):
                result = self.runner.run(config, self.base, self._phase(trial.number, config))
            values = tuple(result.objective(o) for o in self.spec.objectives)
            if not all(math.isfinite(v) for v in values):
                raise TrialError(f"non-finite objectives {values}")
        except BaseException as err:
            reason = f"{type(err).__name__}: {err}"
            trial.set_user_attr("fail_reason", reason)
            if isinstance(err, KeyboardInterrupt):
                trial.set_user_attr(INTERRUPTED_ATTR, True)  # not the configuration's fault
            self.results.fail(rkey, reason)
            self.console.print(f"  [red]trial {trial.number} failed[/]: {key}: {reason}")
            raise
        attrs = result.attrs()
        self.results.finish(rkey, attrs)
        self._record(trial, attrs)
        self.console.print(_trial_line(trial.number, result))
        return values


def _trial_line(number: int, r: TrialResult) -> str:
    ppl = f" ppl {r.perplexity:.2f}" if r.perplexity is not None else ""
    t = r.timings
    return (
        f"  trial {number}: {r.config.key()}: Sr {r.sr:.3f} SrCr {r.srcr:.3f} "
        f"TCr {r.tcr:.3f} ratio {r.real_ratio:.2f}x{ppl} "
        f"({t['calibration_s']:.1f}s calibrate, {t['compress_s']:.1f}s compress, "
        f"{t['evaluate_s']:.1f}s eval)"
    )


def run_worker(
    study: optuna.Study,
    spec: StudySpec,
    runner: TrialRunner,
    base: BaseReference,
    results: ResultsTable,
    context: dict[str, Any],
    target: int,
    console: Console,
    poll_s: float = 2.0,
) -> None:
    """Run trials until the study holds ``target`` complete ones.

    A trial that raises is stored FAIL with its reason and the loop goes on; Ctrl-C stores the
    running trial FAIL and ends the loop (KeyboardInterrupt propagates).
    """
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    done = count(study, TrialState.COMPLETE)
    with Progress(*columns, console=console) as progress:
        task_id = progress.add_task("trials", total=target, completed=done)
        objective = Objective(
            spec, runner, base, results, context, target, console, progress, task_id
        )
        start = time.perf_counter()
        while True:
            done = count(study, TrialState.COMPLETE)
            progress.update(task_id, completed=done)
            if done >= target:
                break
            if done + count(study, TrialState.RUNNING) >= target:
                time.sleep(poll_s)  # others' trials may yet complete, or die and be retried
                optuna.storages.fail_stale_trials(study)
                continue
            if spec.sampler.name == "grid":
                queue_missing(study, spec)
                if space_covered(study, spec):
                    break
                if not count(study, TrialState.WAITING):
                    time.sleep(poll_s)  # the rest of the grid is running on other workers
                    optuna.storages.fail_stale_trials(study)
                    continue
            study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
        progress.update(
            task_id,
            completed=count(study, TrialState.COMPLETE),
            description=f"trials done in {time.perf_counter() - start:.0f}s",
        )
