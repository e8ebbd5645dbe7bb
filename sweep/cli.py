"""The command line: ``sweep run``, ``worker``, ``status``, ``report``, ``export``, ``compress``,
``dashboard``."""

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
SpecArg = Annotated[Path, typer.Argument(help="Study spec (YAML).")]
ModelOpt = Annotated[str | None, typer.Option(help="The model the study ran on.")]
StudyNameOpt = Annotated[str | None, typer.Option(help="Study name in the storage.")]


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
    from sweep.export import ExportError
    from sweep.model import ModelLoadError
    from sweep.study import SpecChangedError, StorageError

    return (
        SpecError,
        StorageError,
        SpecChangedError,
        ModelLoadError,
        TaskError,
        CalibrationError,
        ExportError,
    )


def _stored_study(spec_path: Path, model: str | None, storage: str | None, name: str | None):
    """The stored study that a spec (with ``--model``) names; with both ``--storage`` and
    ``--study-name`` the spec is not read."""
    from sweep.study import load_existing_study

    if storage is None or name is None:
        spec = _study_for(spec_path, model)
        storage, name = storage or spec.storage_url(), name or spec.name
    return load_existing_study(storage, name)


def _study_for(spec_path: Path, model: str | None) -> StudySpec:
    spec = load_spec(spec_path)
    if model and model != spec.model:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(model).name if Path(model).exists() else model)
        name = spec.name if model == DEMO_MODEL else f"{spec.name}-{slug.strip('-')}"
        spec = spec.model_copy(update={"model": model, "name": name})
    return spec


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
    study: SpecArg = DEFAULT_STUDY,
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

    from sweep.grid import queue_missing
    from sweep.report import (
        front_table,
        pareto_html_path,
        reuse_summary,
        trials_frame,
        write_pareto_html,
    )
    from sweep.space import all_configs
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
    if spec.sampler.name == "grid":
        queue_missing(optuna_study, spec)  # before any worker starts, so that none races to fill it
        size = len(all_configs(spec.search))
        short = f"; {target} trials will not cover it all" if target < size else ""
        console.print(f"grid: {size} distinct configurations, each visited once{short}")
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
    console.print(reuse_summary(frame))
    console.print(front_table(frame))
    html = write_pareto_html(frame, pareto_html_path(url, spec.name), title=f"study {spec.name}")
    console.print(f"Pareto plot: {html}  (all plots, the paper's table, CSV: make report)")
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

    from sweep.study import TARGET_ATTR, make_sampler, make_storage, require_database, stored_spec

    if threads:
        torch.set_num_threads(threads)
    try:
        require_database(storage)
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
    study: SpecArg = DEFAULT_STUDY,
    model: ModelOpt = None,
    storage: StorageOpt = None,
    study_name: StudyNameOpt = None,
) -> None:
    """Show a study's progress: complete, running, failed (with reasons), best so far."""
    from sweep.status import print_status

    try:
        print_status(_stored_study(study, model, storage, study_name), console)
    except _user_errors() as err:
        raise _fail(str(err)) from None


@app.command()
def report(
    study: SpecArg = DEFAULT_STUDY,
    model: ModelOpt = None,
    storage: StorageOpt = None,
    study_name: StudyNameOpt = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder to write (default: runs/<study>-report).")
    ] = None,
    x: Annotated[
        str, typer.Option(help="Compression axis of the SrCr plot: tcr or real_ratio.")
    ] = "tcr",
    png: Annotated[bool, typer.Option(help="Also write PNG plots (needs Chromium).")] = True,
) -> None:
    """Write a study's Pareto plots (HTML, PNG), the paper's table (markdown, CSV) and a CSV of
    every trial, and print the front and the table."""
    from sweep.report import front_table, paper_rich_table, trials_frame, write_report

    if x not in ("tcr", "real_ratio"):
        raise _fail(f"--x must be 'tcr' or 'real_ratio', got {x!r}")
    try:
        loaded = _stored_study(study, model, storage, study_name)
    except _user_errors() as err:
        raise _fail(str(err)) from None
    name = loaded.study_name
    folder = out or Path("runs") / f"{name}-report"
    frame = trials_frame(loaded)
    if frame.empty:
        raise _fail(f"study {name!r} has no complete trial yet: run it first", code=1)
    written = write_report(loaded, folder, x=x, png=png)
    console.print(front_table(frame, x=x))
    if written.table is not None:
        console.print(paper_rich_table(written.table))
    if written.png_skipped:
        console.print(f"[yellow]{written.png_skipped}[/]")
    for path in written.files:
        console.print(f"wrote {path}")


@app.command()
def export(
    study: SpecArg = DEFAULT_STUDY,
    model: ModelOpt = None,
    storage: StorageOpt = None,
    study_name: StudyNameOpt = None,
    trial: Annotated[
        int | None, typer.Option(help="Trial number (default: the best SrCr on the front).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder to write (default: runs/<study>-trial-<n>).")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show per-layer progress bars.")] = True,
) -> None:
    """Export a trial: the compressed checkpoint (loads with from_pretrained; quantized layers
    packed), the spec fragment that reproduces it, the llm-compressor recipe and a model card."""
    from sweep.compress import CompressionConfig
    from sweep.export.bundle import Source, check_output_folder, choose_trial
    from sweep.study import BASE_ATTR, stored_spec

    try:
        loaded = _stored_study(study, model, storage, study_name)
        name = loaded.study_name
        chosen = choose_trial(loaded, trial)
        folder = out or Path("runs") / f"{name}-trial-{chosen.number}"
        check_output_folder(folder)
        ran = stored_spec(loaded)  # the spec the study ran with, whatever the file says now
        config = CompressionConfig(**chosen.user_attrs["config"])
        console.print(f"exporting trial {chosen.number} of {name}: {config.key()}")
        measured = {k: chosen.user_attrs.get(k) for k in _MEASURED}
        source = Source(name, chosen.number, ran.model)
        files = _compress_and_write(ran, config, folder, measured, loaded.user_attrs[BASE_ATTR],
                                    source, progress)  # fmt: skip
    except _user_errors() as err:
        raise _fail(str(err)) from None
    for path in files:
        console.print(f"wrote {path}")
    console.print(f"load it with AutoModelForCausalLM.from_pretrained({str(folder)!r})")


@app.command()
def compress(
    spec_path: Annotated[
        Path, typer.Argument(help="A spec holding one configuration (sweep export writes one).")
    ],
    out: Annotated[Path | None, typer.Option(help="Also write the checkpoint folder here.")] = None,
    progress: Annotated[bool, typer.Option(help="Show per-layer progress bars.")] = True,
) -> None:
    """Compress the model by a spec's one configuration, evaluate it (and the base model, for
    Sr), print its metrics and optionally write the checkpoint folder."""
    from sweep.export.bundle import Source, check_output_folder
    from sweep.export.fragment import the_config
    from sweep.workers import prepare_runner

    runner = None
    try:
        spec = load_spec(spec_path)
        config = the_config(spec)
        if out is not None:
            check_output_folder(out)
        runner = prepare_runner(spec, console, progress)
        with console.status("evaluating the base model"):
            base = runner.evaluate_base()
        result = runner.run(config, base, record_grids=out is not None)
    except _user_errors() as err:
        raise _fail(str(err)) from None
    finally:
        if runner is not None and runner.evaluator is not None:
            runner.evaluator.close()
    console.print(_metrics_table(result))
    if out is not None:
        from dataclasses import asdict

        measured = {k: v for k, v in result.attrs().items() if k in _MEASURED}
        files = _write_bundle(runner, spec, config, result.grids, out, measured, asdict(base),
                              Source(spec.name, None, spec.model))  # fmt: skip
        for path in files:
            console.print(f"wrote {path}")


_MEASURED = ("sparsity", "zero_fraction", "tcr", "real_ratio", "sr", "srcr", "perplexity",
             "task_scores", "timings")  # fmt: skip


def _metrics_table(result):
    from rich.table import Table

    table = Table(title=f"{result.config.key()}", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = {"TCr": f"{result.tcr:.4f}", "real ratio": f"{result.real_ratio:.2f}x",
            "Sr": f"{result.sr:.4f}", "SrCr": f"{result.srcr:.4f}",
            "sparsity": f"{result.sparsity:.4f}"}  # fmt: skip
    if result.perplexity is not None:
        rows["perplexity"] = f"{result.perplexity:.3f}"
    rows |= {task: f"{score:.4f}" for task, score in result.task_scores.items()}
    for k, v in rows.items():
        table.add_row(k, v)
    return table


def _compress_and_write(spec, config, out, measured, base, source, progress) -> list[Path]:
    from sweep.export.fragment import trial_spec
    from sweep.workers import prepare_runner

    # narrowed to the one config, so calibration data is read only if that config needs it
    one = trial_spec(spec, config, spec.name)
    runner = prepare_runner(one, console, progress, evaluate=False)
    result = runner.compress(config, record_grids=True)
    return _write_bundle(runner, spec, config, result.grids, out, measured, base, source)


def _write_bundle(runner, spec, config, grids, out, measured, base, source) -> list[Path]:
    from transformers import AutoTokenizer

    from sweep.export.bundle import write_bundle
    from sweep.model import model_source

    tokenizer = AutoTokenizer.from_pretrained(model_source(spec.model))
    with console.status(f"writing {out}"):
        return write_bundle(out, runner.model, tokenizer, spec, config, grids,
                            runner.storage_dtype, measured, base, source)  # fmt: skip


@app.command()
def dashboard(
    study: SpecArg = DEFAULT_STUDY,
    storage: StorageOpt = None,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8080,
) -> None:
    """Serve the study's storage with optuna-dashboard."""
    from optuna_dashboard import run_server

    from sweep.study import existing_storage

    try:
        backend = existing_storage(storage or load_spec(study).storage_url())
    except _user_errors() as err:
        raise _fail(str(err)) from None
    console.print(f"optuna-dashboard on http://{host}:{port} (Ctrl-C to stop)")
    run_server(backend, host=host, port=port)


if __name__ == "__main__":
    app()
