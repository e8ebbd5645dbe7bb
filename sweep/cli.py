"""The command line: ``sweep run``, ``sweep worker``, ``sweep status``, ``sweep dashboard``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from sweep.spec import DEMO_MODEL, SpecError, StudySpec, load_spec

app = typer.Typer(
    help="Search the best mix of pruning and quantization for an LLM.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)
DEFAULT_STUDY = Path("studies/demo.yaml")
WAIT_FOR_BASE_S = 600.0  # a joining worker's wait for the launcher's base evaluation

StorageOpt = Annotated[
    str | None, typer.Option(help="SQLAlchemy URL of the study (default: the spec's).")
]


@app.callback()
def _quiet_libraries() -> None:
    """Keep the libraries' own logs and progress bars to what a user needs to see."""
    import logging
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    for name in ("lm_eval", "lm-eval", "transformers", "datasets", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()


def _fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def _user_errors() -> tuple[type[Exception], ...]:
    """The errors that mean "bad input": reported in one line, exit code 2, nothing written."""
    from sweep.calibration_data import CalibrationError
    from sweep.evaluate import TaskError
    from sweep.model import ModelLoadError
    from sweep.study import SpecChangedError, StorageError

    return (SpecError, StorageError, SpecChangedError, ModelLoadError, TaskError, CalibrationError)


def _study_for(spec_path: Path, model: str | None) -> StudySpec:
    spec = load_spec(spec_path)
    if model and model != spec.model:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(model).name if Path(model).exists() else model)
        name = spec.name if model == DEMO_MODEL else f"{spec.name}-{slug.strip('-')}"
        spec = spec.model_copy(update={"model": model, "name": name})
    return spec


def _report_path(storage_url: str, name: str) -> Path:
    if storage_url.startswith("sqlite:///"):
        return Path(storage_url.removeprefix("sqlite:///")).parent / f"{name}-pareto.html"
    return Path("runs") / f"{name}-pareto.html"


class _Worker:
    """This process's model and tasks, loaded once, and the study's base reference."""

    def __init__(self, spec: StudySpec, device: str | None, progress: bool) -> None:
        from sweep.workers import prepare_runner

        self.spec = spec
        self.runner = prepare_runner(spec, console, progress, device)

    def run(self, study, url: str, base=None, wait_for_base_s: float = 0.0) -> None:
        from sweep.compress.calibration import model_fingerprint
        from sweep.results import ResultsTable, result_context
        from sweep.study import TARGET_ATTR, run_worker

        base = base or self.ensure_base(study, wait_for_base_s)
        context = result_context(self.spec, model_fingerprint(self.runner.model))
        results = ResultsTable(url)
        target = int(study.user_attrs[TARGET_ATTR])
        try:
            run_worker(study, self.spec, self.runner, base, results, context, target, console)
        finally:
            self.runner.evaluator.close()

    def ensure_base(self, study, wait_s: float = 0.0):
        """The stored base reference; a joining worker first waits ``wait_s`` for the launcher
        to store it, then evaluates the base model itself."""
        import time

        from sweep.study import store_base, stored_base

        deadline = time.monotonic() + wait_s
        base = stored_base(study)
        while base is None and time.monotonic() < deadline:
            time.sleep(1.0)
            base = stored_base(study)  # user attributes are read from the storage each time
        if base is None:
            with console.status("evaluating the base model (once per study)"):
                base = self.runner.evaluate_base()
            store_base(study, base)
        scores = ", ".join(f"{t} {s:.3f}" for t, s in base.scores.items())
        console.print(f"base model: {scores}")
        return base


@app.command()
def run(
    study: Annotated[Path, typer.Argument(help="Study spec (YAML).")] = DEFAULT_STUDY,
    model: Annotated[
        str | None, typer.Option(help="Hugging Face id or local folder; overrides the spec.")
    ] = None,
    trials: Annotated[
        int | None, typer.Option(min=1, help="Complete trials to add (default: the spec's).")
    ] = None,
    storage: StorageOpt = None,
    study_name: Annotated[
        str | None, typer.Option(help="Study name in the storage (default: the spec's).")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (one per GPU).")] = 1,
    progress: Annotated[bool, typer.Option(help="Show per-layer progress bars.")] = True,
) -> None:
    """Run (or continue) a study: each trial compresses, evaluates and scores one config."""
    from optuna.trial import TrialState

    from sweep.report import front_table, trials_frame, write_pareto_html
    from sweep.study import TARGET_ATTR, count, open_study, preflight
    from sweep.workers import spawn_workers, worker_devices

    try:
        spec = _study_for(study, model)
        if study_name:
            spec = spec.model_copy(update={"name": study_name})
        url = storage or spec.storage_url()
        preflight(spec, url)  # fails before the model is loaded, and writes nothing
        devices = worker_devices(workers, spec.device)
        me = _Worker(spec, devices[0], progress)
        optuna_study = open_study(spec, url)
    except _user_errors() as err:
        raise _fail(str(err)) from None

    done = count(optuna_study, TrialState.COMPLETE)
    target = done + (trials or spec.trials)
    optuna_study.set_user_attr(TARGET_ATTR, target)
    console.print(
        f"study [bold]{spec.name}[/] on {url} · model {spec.model} · {done} trials complete, "
        f"running until {target} · {workers} worker(s) on {', '.join(sorted(set(devices)))}"
    )
    procs = []
    try:
        # the other workers load their model meanwhile, and wait for this base reference
        procs = spawn_workers(url, spec.name, devices[1:])
        base = me.ensure_base(optuna_study)
        me.run(optuna_study, url, base)
    except _user_errors() as err:
        raise _fail(str(err)) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: the running trial is stored FAIL, others kept[/]")
        raise typer.Exit(130) from None
    finally:
        for p in procs:
            p.wait()

    frame = trials_frame(optuna_study)
    if frame.empty:
        raise _fail("no trial completed; see the failure reasons above", code=1)
    console.print(front_table(frame))
    html = write_pareto_html(frame, _report_path(url, spec.name), title=f"study {spec.name}")
    console.print(f"Pareto plot: {html}")
    console.print(
        f"Inspect the trials: make dashboard STUDY={study}  (optuna-dashboard, 127.0.0.1)"
    )


@app.command()
def worker(
    storage: Annotated[str, typer.Option(help="SQLAlchemy URL of the study.")],
    study: Annotated[str, typer.Option(help="Name of the study to join.")],
    device: Annotated[str | None, typer.Option(help="Device (default: the spec's).")] = None,
    index: Annotated[int, typer.Option(help="Worker number, offsets the sampler seed.")] = 1,
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch.")] = None,
    progress: Annotated[bool, typer.Option(help="Show per-layer progress bars.")] = True,
) -> None:
    """Join a study from this process (on this machine or another) until it is complete."""
    import optuna
    import torch

    from sweep.study import TARGET_ATTR, make_sampler, make_storage, stored_spec

    if threads:
        torch.set_num_threads(threads)
    try:
        backend = make_storage(storage)
        names = {s.study_name for s in backend.get_all_studies()}
        if study not in names:
            from sweep.study import StorageError

            raise StorageError(f"no study {study!r} in {storage}; it has: {sorted(names)}")
        loaded = optuna.load_study(study_name=study, storage=backend)
        spec = stored_spec(loaded)
        loaded.sampler = make_sampler(spec, index)
        if TARGET_ATTR not in loaded.user_attrs:
            loaded.set_user_attr(TARGET_ATTR, spec.trials)
        _Worker(spec, device, progress).run(loaded, storage, wait_for_base_s=WAIT_FOR_BASE_S)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except _user_errors() as err:
        raise _fail(str(err)) from None


@app.command()
def status(
    study: Annotated[Path, typer.Argument(help="Study spec (YAML).")] = DEFAULT_STUDY,
    storage: StorageOpt = None,
    study_name: Annotated[str | None, typer.Option(help="Study name in the storage.")] = None,
) -> None:
    """Show a study's progress: complete, running, failed (with reasons), best so far."""
    from sweep.status import print_status

    try:
        spec = load_spec(study)
        print_status(storage or spec.storage_url(), study_name or spec.name, console)
    except _user_errors() as err:
        raise _fail(str(err)) from None


@app.command()
def dashboard(
    study: Annotated[Path, typer.Argument(help="Study spec (YAML).")] = DEFAULT_STUDY,
    storage: StorageOpt = None,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8080,
) -> None:
    """Serve the study's storage with optuna-dashboard."""
    from optuna_dashboard import run_server

    from sweep.study import StorageError, make_storage

    try:
        url = storage or load_spec(study).storage_url()
        if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
            raise StorageError(f"no study database at {url}: run `make sweep` first")
        backend = make_storage(url, heartbeat=False)
    except _user_errors() as err:
        raise _fail(str(err)) from None
    console.print(f"optuna-dashboard on http://{host}:{port} (Ctrl-C to stop)")
    run_server(backend, host=host, port=port)


if __name__ == "__main__":
    app()
