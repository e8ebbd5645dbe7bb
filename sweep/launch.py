"""Running a study: ``launch`` (what `sweep run` does) and ``join`` (what `sweep worker` does).

``launch`` reads the spec, checks the storage, loads the model, opens the study, sets its
target, lets the search plan prepare, evaluates the base model (once per study), and only then
starts the other workers, so that none of them waits on a launch that failed; then it runs
trials itself. ``join`` attaches one more worker to a stored study, from any machine that
reaches its storage, reading the study's spec from the storage.
"""

from __future__ import annotations

import hashlib
import time
from contextlib import nullcontext
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

BASE_CLAIM = "base model"  # the results table's config_key of a study's base evaluation


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
        results = ResultsTable(url)
        base = ensure_base(study, runner, events, results)
        context = _context(spec, runner, base, results, run)
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
        results = ResultsTable(request.storage)
        base = ensure_base(study, runner, events, results)
        context = _context(spec, runner, base, results, run)
        return run_trials(study, context, plan, events)


def check_inputs(study: optuna.Study, spec: StudySpec, runner: TrialRunner) -> None:
    """Refuse inputs other than those the study's trials were measured on; the study pins those
    it has not pinned yet."""
    where = calibration_source(spec.calibration)
    check_fingerprints(study, runner.fingerprints, spec.model, where)


def ensure_base(
    study: optuna.Study, runner: TrialRunner, events: Events, results: ResultsTable
) -> BaseReference:
    """The study's stored base reference. The first worker to need it evaluates it, holding a
    claim on it in the results table; the others wait for that claim's end (and take it over
    if its worker dies), so that workers started together (a SLURM array) evaluate it once."""
    base = stored_base(study)
    took = "stored with the study"
    if base is None:
        base, took = _evaluate_base_once(study, runner, events, results)
    shown = [f"{t} {s:.3f}" for t, s in base.scores.items()]
    if base.perplexity is not None:
        shown.append(f"perplexity {base.perplexity:.2f}")
    events.note(f"base model: {', '.join(shown)} ({took})")
    if base.samples is not None:
        samples = base.task_samples() or {}
        sizes = ", ".join(
            f"{t} {', '.join(str(n) for n in s.step_sizes())} of {s.population}"
            for t, s in samples.items()
        )
        growing = any(s.steps > 1 for s in samples.values())
        events.note(
            f"staged evaluation: KL proxy, then a sample of each task ({sizes} documents"
            f"{', step by step' if growing else ''}); a trial whose best case the front "
            "dominates stops there"
        )
    return base


def _evaluate_base_once(
    study: optuna.Study, runner: TrialRunner, events: Events, results: ResultsTable
) -> tuple[BaseReference, str]:
    """Claim the base evaluation and run it, or wait for the worker that claimed it."""
    key = base_claim_key(study)
    claim = results.claim(
        key, BASE_CLAIM, {}, study.study_name, -1,
        on_wait=lambda owner: events.note(f"waiting for {owner} to evaluate the base model"),
    )  # fmt: skip
    base = stored_base(study)
    if base is None:  # this worker's to evaluate (or done, in a study deleted and made again)
        start = time.perf_counter()
        beating = results.beating(key) if claim.owned else nullcontext()
        try:
            with beating, events.busy("evaluating the base model (once per study)"):
                base = runner.evaluate_base()
            store_base(study, base)
        except BaseException as err:
            if claim.owned:  # another worker takes it over at once
                results.fail(key, f"{type(err).__name__}: {err}")
            raise
        took = f"evaluated in {time.perf_counter() - start:.0f}s"
    else:
        took = "stored with the study by another worker"
    if claim.owned:
        results.finish(key, {})
    return base, took


def base_claim_key(study: optuna.Study) -> str:
    """The results table's key of a study's base evaluation (of this study: the same name in
    another storage, or made again, is another)."""
    where = f"base:{study.study_name}:{study._study_id}"
    return hashlib.sha256(where.encode()).hexdigest()


def _context(
    spec: StudySpec, runner: TrialRunner, base: BaseReference, results: ResultsTable, run: Run
) -> WorkerContext:
    context = ResultContext.of(spec, runner.fingerprints)
    staged = base.samples is not None and runner.evaluator is not None
    return WorkerContext(spec, runner, base, results, context, run, staged)
