"""Running a study: ``launch`` (what `sweep run` does) and ``join`` (what `sweep worker` does).

``launch`` reads the spec, checks the storage, loads the model, opens the study, sets its
target, lets the search plan prepare, evaluates the base model (once per study), and only then
starts the other workers, so that none of them waits on a launch that failed; then it runs
trials itself. ``join`` attaches one more worker to a stored study, from any machine that
reaches its storage, reading the study's spec from the storage.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import pandas as pd
import torch

from sweep.evaluation.measurement import BaseReference
from sweep.events import Events
from sweep.identity import ResultContext, check_spec_inputs
from sweep.objective import WorkerContext
from sweep.plan import make_plan
from sweep.record import measured_records
from sweep.report import trials_frame
from sweep.results import ResultsTable
from sweep.run_loop import RunProgress, run_trials
from sweep.space import check_group_sizes, first_configs
from sweep.spec import StudySpec, calibration_source, load_spec, with_overrides
from sweep.storage import display
from sweep.study import (
    Run,
    check_fingerprints,
    current_run,
    load_existing_study,
    open_study,
    preflight,
    start_run,
    store_base,
    stored_base,
    stored_spec,
)
from sweep.trial import TrialRunner
from sweep.workers import prepare_runner, worker_devices, worker_processes

WAIT_FOR_BASE_S = 600.0  # a joining worker's wait for the launcher's base evaluation


@dataclass(frozen=True)
class LaunchRequest:
    """`sweep run`'s arguments: a spec, and what the command line overrides in it."""

    spec_path: Path
    model: str | None = None
    trials: int | None = None  # new configurations to compute (default: the spec's)
    storage: str | None = None
    study_name: str | None = None
    workers: int = 1
    progress: bool = True  # per-layer progress bars

    def spec(self) -> StudySpec:
        return with_overrides(load_spec(self.spec_path), self.model, self.study_name)


@dataclass(frozen=True)
class RunOutcome:
    """A finished run: the study as it stands, its complete trials, and what this run
    computed."""

    spec: StudySpec
    storage: str
    study: optuna.Study
    frame: pd.DataFrame  # report.trials_frame of the complete trials
    run: Run
    progress: RunProgress  # of this run


def launch(request: LaunchRequest, events: Events) -> RunOutcome:
    """Run (or continue) a study with ``request.workers`` workers, this process one of them,
    until the run has computed ``request.trials`` new configurations (default: the spec's)."""
    spec = request.spec()
    first_configs(spec.search)  # a bad search.first fails here, before anything is loaded
    url = request.storage or spec.storage_url()
    preflight(spec, url)  # fails before the model is loaded, and writes nothing
    devices = worker_devices(request.workers, spec.device)
    with prepare_runner(spec, events, request.progress, devices[0]) as runner:
        check_group_sizes(spec.search, runner.loaded.input_widths())  # before any trial
        check_spec_inputs(spec, runner.fingerprints)  # before the study is created
        study = open_study(spec, url)
        check_inputs(study, spec, runner)
        plan = make_plan(spec, worker=0, trials_before=len(study.trials))
        study.sampler = plan.sampler
        run = start_run(study, request.trials or spec.trials)
        records = measured_records(study)
        distinct = len({r.config_key for r in records})
        events.note(
            f"study [bold]{spec.name}[/] on {display(url)} · model {spec.model} · "
            f"{len(records)} complete trials ({distinct} distinct configurations) · this run "
            f"computes {run.budget} new ones · {len(devices)} worker(s) on "
            f"{', '.join(sorted(set(devices)))}"
        )
        line = plan.prepare(study)  # before any worker starts, so that none races to fill it
        if line:
            events.note(line)
        base = ensure_base(study, runner, events)
        context = _context(spec, runner, base, url, run)
        with worker_processes(url, spec.name, devices[1:]):
            progress = run_trials(study, context, plan, events)
    return RunOutcome(spec, url, study, trials_frame(study), run, progress)


@dataclass(frozen=True)
class JoinRequest:
    """`sweep worker`'s arguments: which study, and how this worker runs."""

    storage: str
    study: str
    device: str | None = None  # default: the spec's
    index: int = 1  # this worker's number, which offsets its sampler's seed
    threads: int | None = None  # CPU threads for torch
    progress: bool = True


def join(request: JoinRequest, events: Events) -> RunProgress:
    """Work on a stored study's current run until it has computed its budget."""
    if request.threads:
        torch.set_num_threads(request.threads)
    study = load_existing_study(request.storage, request.study, heartbeat=True)
    spec = stored_spec(study)
    plan = make_plan(spec, worker=request.index, trials_before=len(study.trials))
    study.sampler = plan.sampler
    with prepare_runner(spec, events, request.progress, request.device) as runner:
        check_inputs(study, spec, runner)
        run = current_run(study) or start_run(study, spec.trials)
        base = ensure_base(study, runner, events, wait_s=WAIT_FOR_BASE_S)
        context = _context(spec, runner, base, request.storage, run)
        return run_trials(study, context, plan, events)


def check_inputs(study: optuna.Study, spec: StudySpec, runner: TrialRunner) -> None:
    """Refuse inputs other than those the study's trials were measured on; the study pins those
    it has not pinned yet."""
    where = calibration_source(spec.calibration)
    check_fingerprints(study, runner.fingerprints, spec.model, where)


def ensure_base(
    study: optuna.Study, runner: TrialRunner, events: Events, wait_s: float = 0.0
) -> BaseReference:
    """The study's stored base reference; a joining worker first waits ``wait_s`` for the
    launcher to store it, then evaluates the base model itself."""
    deadline = time.monotonic() + wait_s
    base = stored_base(study)
    while base is None and time.monotonic() < deadline:
        time.sleep(1.0)
        base = stored_base(study)  # user attributes are read from the storage each time
    took = "stored with the study"
    if base is None:
        start = time.perf_counter()
        with events.busy("evaluating the base model (once per study)"):
            base = runner.evaluate_base()
        store_base(study, base)
        took = f"evaluated in {time.perf_counter() - start:.0f}s"
    shown = [f"{t} {s:.3f}" for t, s in base.scores.items()]
    if base.perplexity is not None:
        shown.append(f"perplexity {base.perplexity:.2f}")
    events.note(f"base model: {', '.join(shown)} ({took})")
    if base.samples is not None:
        samples = base.task_samples() or {}
        sizes = ", ".join(f"{t} {s.size} of {s.population}" for t, s in samples.items())
        events.note(
            f"staged evaluation: KL proxy, then a sample of each task ({sizes} documents); "
            "a trial whose best case the front dominates stops there"
        )
    return base


def _context(
    spec: StudySpec, runner: TrialRunner, base: BaseReference, url: str, run: Run
) -> WorkerContext:
    context = ResultContext.of(spec, runner.fingerprints)
    staged = base.samples is not None and runner.evaluator is not None
    return WorkerContext(spec, runner, base, ResultsTable(url), context, run, staged)
