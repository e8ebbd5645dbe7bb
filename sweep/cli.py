"""The command line: ``sweep run``, ``sweep dashboard``."""

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
)
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)
DEFAULT_STUDY = Path("studies/demo.yaml")


def _fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def _study_for(spec_path: Path, model: str | None) -> StudySpec:
    spec = load_spec(spec_path)
    if model and model != spec.model:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(model).name if Path(model).exists() else model)
        name = spec.name if model == DEMO_MODEL else f"{spec.name}-{slug.strip('-')}"
        spec = spec.model_copy(update={"model": model, "name": name})
    return spec


def _storage(spec: StudySpec, storage: str | None) -> str:
    return storage or spec.storage_url()


def _report_path(storage_url: str, name: str) -> Path:
    if storage_url.startswith("sqlite:///"):
        return Path(storage_url.removeprefix("sqlite:///")).parent / f"{name}-pareto.html"
    return Path("runs") / f"{name}-pareto.html"


@app.command()
def run(
    study: Annotated[Path, typer.Argument(help="Study spec (YAML).")] = DEFAULT_STUDY,
    model: Annotated[
        str | None, typer.Option(help="Hugging Face id or local folder; overrides the spec.")
    ] = None,
    trials: Annotated[int | None, typer.Option(min=1, help="Trials to run now.")] = None,
    storage: Annotated[str | None, typer.Option(help="SQLAlchemy URL of the study.")] = None,
    progress: Annotated[bool, typer.Option(help="Show per-layer progress bars.")] = True,
) -> None:
    """Run (or continue) a study: compress, evaluate and score one configuration per trial."""
    from sweep.evaluate import Evaluator, TaskError
    from sweep.model import ModelLoadError, load_model, resolve_device, tensor_inventory
    from sweep.report import front_table, trials_frame, write_pareto_html
    from sweep.study import StorageError, open_study, run_trials, store_base, stored_base
    from sweep.trial import TrialRunner

    try:
        spec = _study_for(study, model)
        url = _storage(spec, storage)
        optuna_study = open_study(spec, url)
        device = resolve_device(spec.device)
        console.print(f"study [bold]{spec.name}[/] on {url} · model {spec.model} · {device}")
        with console.status("loading model"):
            lm, tokenizer = load_model(spec.model, spec.dtype, device)
        from sweep.demo import TASKS_DIR

        with console.status("preparing lm-eval tasks"):
            evaluator = Evaluator(spec.evaluation, lm, tokenizer, [TASKS_DIR], device=device)
    except (SpecError, StorageError, ModelLoadError, TaskError) as err:
        raise _fail(str(err)) from None

    runner = TrialRunner(lm, evaluator, tensor_inventory(lm), progress=progress)
    base = stored_base(optuna_study)
    if base is None:
        with console.status("evaluating the base model (once per study)"):
            base = runner.evaluate_base()
        store_base(optuna_study, base, spec)
    scores = ", ".join(f"{t} {s:.3f}" for t, s in base.scores.items())
    console.print(f"base model: {scores}")

    n_trials = trials or spec.trials
    before = len(optuna_study.trials)
    console.print(f"{before} trials stored; running {n_trials} more")
    try:
        run_trials(optuna_study, spec, runner, base, n_trials, console)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: the running trial is marked failed, others kept[/]")
        raise typer.Exit(130) from None
    finally:
        evaluator.close()

    frame = trials_frame(optuna_study)
    if frame.empty:
        raise _fail("no trial completed; see the failure reasons above", code=1)
    console.print(front_table(frame))
    html = write_pareto_html(frame, _report_path(url, spec.name), title=f"study {spec.name}")
    console.print(f"Pareto plot: {html}")
    console.print(
        f"Inspect the trials: make dashboard STUDY={study} (optuna-dashboard on 127.0.0.1)"
    )


@app.command()
def dashboard(
    study: Annotated[Path, typer.Argument(help="Study spec (YAML).")] = DEFAULT_STUDY,
    storage: Annotated[str | None, typer.Option(help="SQLAlchemy URL of the study.")] = None,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8080,
) -> None:
    """Serve the study's storage with optuna-dashboard."""
    from optuna_dashboard import run_server

    from sweep.study import StorageError, make_storage

    try:
        url = _storage(load_spec(study), storage)
        if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
            raise StorageError(f"no study database at {url}: run `make sweep` first")
        backend = make_storage(url)
    except (SpecError, StorageError) as err:
        raise _fail(str(err)) from None
    console.print(f"optuna-dashboard on http://{host}:{port} (Ctrl-C to stop)")
    run_server(backend, host=host, port=port)


if __name__ == "__main__":
    app()
