"""The Optuna study: storage, sampler, the objective, and the base model's reference scores."""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sweep.compress import CompressionConfig
from sweep.space import grid_space, suggest_config
from sweep.spec import StudySpec
from sweep.trial import BaseReference, TrialError, TrialResult, TrialRunner

OBJECTIVE_LABELS = {"srcr": "SrCr", "sr": "Sr", "tcr": "TCr", "real_ratio": "compression ratio"}
BASE_ATTR = "base_reference"


class StorageError(RuntimeError):
    """The study's database cannot be opened or written."""


def make_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage on any SQLAlchemy URL; a SQLite file's folder is created."""
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs["connect_args"] = {"timeout": 60}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except Exception as err:  # SQLAlchemy raises many kinds; all mean the same to the user
        raise StorageError(f"cannot open study storage {url}: {err}") from None


def make_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    seed = spec.sampler.seed
    name = spec.sampler.name
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(grid_space(spec.search), seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def open_study(spec: StudySpec, storage_url: str, name: str | None = None) -> optuna.Study:
    """Create the study, or load it if it exists: re-running continues the same study."""
    storage = make_storage(storage_url)
    study = optuna.create_study(
        study_name=name or spec.name,
        storage=storage,
        sampler=make_sampler(spec),
        directions=["maximize"] * len(spec.objectives),
        load_if_exists=True,
    )
    study.set_metric_names([OBJECTIVE_LABELS[o] for o in spec.objectives])
    return study


def stored_base(study: optuna.Study) -> BaseReference | None:
    data = study.user_attrs.get(BASE_ATTR)
    return BaseReference(**data) if data else None


def store_base(study: optuna.Study, base: BaseReference, spec: StudySpec) -> None:
    study.set_user_attr(BASE_ATTR, asdict(base))
    study.set_user_attr("model", spec.model)
    study.set_user_attr("tasks", [t.name for t in spec.evaluation.tasks])
    study.set_user_attr("objectives", spec.objectives)


def find_computed(study: optuna.Study, key: str) -> optuna.trial.FrozenTrial | None:
    """A finished trial of the same configuration, whose result can be reused."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.user_attrs.get("config_key") == key and "reused_from" not in t.user_attrs:
            return t
    return None


class Objective:
    """Optuna's objective: one configuration per trial, computed once per study."""

    def __init__(
        self,
        spec: StudySpec,
        runner: TrialRunner,
        base: BaseReference,
        console: Console,
        progress: Progress | None = None,
        task_id: Any = None,
    ) -> None:
        self.spec = spec
        self.runner = runner
        self.base = base
        self.console = console
        self.progress = progress
        self.task_id = task_id

    def _phase(self, number: int, config: CompressionConfig):
        def show(phase: str) -> None:
            if self.progress is not None:
                self.progress.update(
                    self.task_id, description=f"trial {number} · {phase} · {config.key()}"
                )

        return show

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        config = suggest_config(trial, self.spec.search)
        key = config.key()
        trial.set_user_attr("config_key", key)
        trial.set_user_attr("config", config.to_dict())
        done = find_computed(trial.study, key)
        if done is not None:
            for name, value in done.user_attrs.items():
                trial.set_user_attr(name, value)
            trial.set_user_attr("reused_from", done.number)
            self.console.print(f"  trial {trial.number}: {key} = trial {done.number}, reused")
            return tuple(done.values)
        try:
            result = self.runner.run(config, self.base, self._phase(trial.number, config))
        except Exception as err:
            trial.set_user_attr("fail_reason", f"{type(err).__name__}: {err}")
            self.console.print(f"  [red]trial {trial.number} failed[/]: {key}: {err}")
            raise
        values = tuple(result.objective(o) for o in self.spec.objectives)
        if not all(math.isfinite(v) for v in values):
            reason = f"non-finite objectives {values}"
            trial.set_user_attr("fail_reason", reason)
            raise TrialError(reason)
        for name, value in result.attrs().items():
            trial.set_user_attr(name, value)
        self.console.print(_trial_line(trial.number, result))
        return values


def _trial_line(number: int, r: TrialResult) -> str:
    ppl = f" ppl {r.perplexity:.2f}" if r.perplexity is not None else ""
    return (
        f"  trial {number}: {r.config.key()}: Sr {r.sr:.3f} SrCr {r.srcr:.3f} "
        f"TCr {r.tcr:.3f} ratio {r.real_ratio:.2f}x{ppl} "
        f"({r.timings['compress_s']:.1f}s compress, {r.timings['evaluate_s']:.1f}s eval)"
    )


def run_trials(
    study: optuna.Study,
    spec: StudySpec,
    runner: TrialRunner,
    base: BaseReference,
    n_trials: int,
    console: Console,
) -> None:
    """Run ``n_trials`` more trials; a failing trial is stored FAIL and the study goes on."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task_id = progress.add_task("trials", total=n_trials)
        objective = Objective(spec, runner, base, console, progress, task_id)
        start = time.perf_counter()
        study.optimize(
            objective,
            n_trials=n_trials,
            catch=(Exception,),
            callbacks=[lambda s, t: progress.advance(task_id)],
            gc_after_trial=True,
        )
        progress.update(task_id, description=f"trials done in {time.perf_counter() - start:.0f}s")
