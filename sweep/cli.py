"""The command line: ``sweep run``, ``worker``, ``submit``, ``storage-proxy``, ``status``,
``report``, ``export``, ``compress``, ``dashboard``. Each command turns its options into a
request for a service and shows what comes back; the work is done in ``sweep.launch``,
``sweep.submit``, ``sweep.report``, ``sweep.export`` and the others.

Each command imports its service when it runs: torch, transformers, compressed-tensors and
optuna-dashboard take seconds to import, and ``sweep --help`` should not wait for all of them.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import optuna
import typer

from sweep.console import ConsoleEvents, console, err_console
from sweep.errors import UserError, disk_full, disk_full_message
from sweep.interrupts import Terminated, terminate_as_interrupt
from sweep.storage import STORAGE_ENV, display

app = typer.Typer(
    help="Search the best mix of pruning and quantization for an LLM.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
DEFAULT_STUDY = Path("studies/demo.yaml")


SpecArg = Annotated[Path, typer.Argument(help="Study spec (YAML).")]
ModelOpt = Annotated[
    str | None, typer.Option(help="Hugging Face id or local folder; overrides the spec's.")
]
StorageOpt = Annotated[
    str | None, typer.Option(help="SQLAlchemy URL of the study (default: the spec's).")
]
StudyNameOpt = Annotated[
    str | None, typer.Option(help="Study name in the storage (default: the spec's).")
]
ProgressOpt = Annotated[
    bool, typer.Option(help="Show per-layer progress bars (on a terminal; never in a log).")
]
ForceOpt = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Write a checkpoint that the deploy runtime would refuse (the model card says so).",
    ),
]

# bounds of numeric options, which typer checks (and refuses in one line, exit code 2)
MAX_WORKERS = 64  # processes that each load the model on one machine
MAX_INDEX = 9999  # a worker's number: added to the sampler's seed, which must stay below 2**32
MAX_THREADS = 4096


def _bars(progress: bool) -> bool:
    """Per-layer bars only where someone watches them: a log gets one line per trial."""
    return progress and sys.stderr.isatty()


class OptionError(UserError):
    """An option value that the command refuses."""


def command(interrupted: str = "interrupted") -> Callable[[Callable[..., Any]], Any]:
    """Register a command whose bad input ends in one line and exit code 2, and Ctrl-C in the
    line ``interrupted`` and exit code 130 (SIGTERM: that line, marked, and exit code 143).
    Messages may quote what the user gave: the secrets of any URL in them are masked
    (``sweep.storage.display``)."""

    def register(fn: Callable[..., Any]) -> Any:
        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except UserError as err:
                err_console.print(f"[bold red]error:[/] {display(str(err))}")
                raise typer.Exit(2) from None
            except KeyboardInterrupt as err:
                terminated = isinstance(err, Terminated)
                err_console.print(f"[yellow]{interrupted}{' (SIGTERM)' if terminated else ''}[/]")
                raise typer.Exit(143 if terminated else 130) from None
            except Exception as err:
                message = disk_full_message(err) if disk_full(err) else _lost_proxy(err)
                if message is None:
                    raise
                err_console.print(f"[bold red]error:[/] {display(message)}")
                raise typer.Exit(2) from None

        return app.command(name=fn.__name__.replace("_", "-"))(guarded)

    return register


def _lost_proxy(err: BaseException) -> str | None:
    """The message for a worker that lost its storage proxy (only a process that spoke gRPC
    can have)."""
    if "grpc" not in sys.modules:
        return None
    from sweep.proxy_client import lost_proxy

    return lost_proxy(err)


def _quiet_imported_libraries() -> None:
    """The settings above reach a library through the environment only when it is imported
    later; one already imported (the CLI called from Python, a notebook) is told directly."""
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()


TRIALS_KEPT = "interrupted: the running trial is stored FAIL, complete ones are kept"


@app.callback()
def _prepare() -> None:
    """Before any command: SIGTERM stops it as Ctrl-C does (see ``sweep.interrupts``), and the
    libraries' own logs and progress bars are kept to what a user needs to see (before they are
    imported: they read these settings then; worker processes inherit them)."""
    terminate_as_interrupt()
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' bars too
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    for name in ("lm_eval", "lm-eval", "transformers", "datasets", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    _quiet_imported_libraries()
    # ERROR: a failed trial is shown by sweep's own line, not by Optuna's warning and traceback
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


@command(TRIALS_KEPT)
def run(
    study: SpecArg = DEFAULT_STUDY,
    model: ModelOpt = None,
    trials: Annotated[
        int | None, typer.Option(min=1, help="Complete trials to add (default: the spec's).")
    ] = None,
    storage: StorageOpt = None,
    study_name: StudyNameOpt = None,
    workers: Annotated[
        int, typer.Option(min=1, max=MAX_WORKERS, help="Worker processes (one per GPU).")
    ] = 1,
    progress: ProgressOpt = True,
) -> None:
    """Run (or continue) a study: each trial compresses, evaluates and scores one config."""
    from sweep.console import front_tables
    from sweep.launch import LaunchRequest, launch
    from sweep.report import pareto_html_path, reuse_summary, write_pareto_html
    from sweep.run_loop import run_summary

    request = LaunchRequest(study, model, trials, storage, study_name, workers, _bars(progress))
    outcome = launch(request, ConsoleEvents())
    if outcome.frame.empty:
        err_console.print("[bold red]error:[/] no trial completed; see the reasons above")
        raise typer.Exit(1)
    console.print(run_summary(outcome.progress, outcome.run))
    console.print(reuse_summary(outcome.frame))
    console.print(*front_tables(outcome.frame))
    html = write_pareto_html(
        outcome.frame,
        pareto_html_path(outcome.storage, outcome.spec.name),
        title=f"study {outcome.spec.name}",
    )
    console.print(f"Pareto plot: {html}  (all plots, the paper's table, CSV: make report)")
    console.print(f"Inspect the trials: make dashboard STUDY={study}  (optuna-dashboard)")


@command(TRIALS_KEPT)
def worker(
    storage: Annotated[
        str,
        typer.Option(
            envvar=STORAGE_ENV,
            show_envvar=True,
            help="SQLAlchemy URL of the study (the environment variable keeps a password off "
            "the command line).",
        ),
    ],
    study: Annotated[str, typer.Option(help="Name of the study to join.")],
    device: Annotated[str | None, typer.Option(help="Device (default: the spec's).")] = None,
    index: Annotated[
        int, typer.Option(min=0, max=MAX_INDEX, help="Worker number, offsets the sampler seed.")
    ] = 1,
    threads: Annotated[
        int | None, typer.Option(min=1, max=MAX_THREADS, help="CPU threads for torch.")
    ] = None,
    progress: ProgressOpt = True,
) -> None:
    """Join a study from this process (on this machine or another) until it is complete."""
    from sweep.launch import JoinRequest, join

    join(JoinRequest(storage, study, device, index, threads, _bars(progress)), ConsoleEvents())


MAX_ARRAY = 1000  # tasks of one SLURM array (SLURM's default MaxArraySize is 1001)


@command()
def submit(
    study: SpecArg = DEFAULT_STUDY,
    slurm: Annotated[bool, typer.Option("--slurm", help="Submit to SLURM (sbatch).")] = False,
    kubernetes: Annotated[
        bool, typer.Option("--kubernetes", help="Write a Kubernetes Job to kubectl apply.")
    ] = False,
    workers: Annotated[
        int, typer.Option(min=1, max=MAX_ARRAY, help="Workers: the array's tasks, or the pods.")
    ] = 1,
    gpus_per_worker: Annotated[int, typer.Option(min=0, max=64, help="GPUs of each worker.")] = 1,
    cpus_per_worker: Annotated[
        int | None, typer.Option(min=1, max=MAX_THREADS, help="CPUs of each task (SLURM).")
    ] = None,
    partition: Annotated[str | None, typer.Option(help="Partition (SLURM).")] = None,
    time: Annotated[
        str | None, typer.Option(help="Time limit of each task (SLURM's --time: 04:00:00).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the script or the Job; change nothing.")
    ] = False,
    model: ModelOpt = None,
    trials: Annotated[
        int | None, typer.Option(min=1, help="New configurations to compute (default: the spec's).")
    ] = None,
    storage: StorageOpt = None,
    study_name: StudyNameOpt = None,
) -> None:
    """Run a study's workers on a cluster, one `sweep worker` per GPU: a SLURM job array
    (--slurm; the storage URL reaches the tasks in a file only you can read, each task logs to
    runs/<study>-slurm/), or a Kubernetes Job to apply (--kubernetes; the URL in a Secret).
    The study and its run are made here; no model is loaded."""
    from sweep.submit import SubmitRequest, submit

    if slurm == kubernetes:
        raise OptionError("say where to submit: --slurm or --kubernetes (one of them)")
    scheduler = "slurm" if slurm else "kubernetes"
    request = SubmitRequest(
        study, scheduler, workers, model, trials, storage, study_name, gpus_per_worker,
        cpus_per_worker, partition, time, dry_run,
    )  # fmt: skip
    done = submit(request, ConsoleEvents())
    if dry_run:
        console.print(done.script, markup=False, highlight=False, end="")
        return
    if slurm:
        logs = f"{done.folder}/{done.job_id}_<task>.log"
        console.print(f"logs: {logs} · progress: sweep status {study}")
    else:
        console.print(f"kubectl apply -f {done.file}  · progress: sweep status {study}")


@command("storage proxy stopped")
def storage_proxy(
    storage: Annotated[
        str,
        typer.Option(
            envvar=STORAGE_ENV,
            show_envvar=True,
            help="SQLAlchemy URL of the database the proxy serves.",
        ),
    ],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free one).")] = 13000,
    pool: Annotated[
        int, typer.Option(min=1, max=1000, help="Database connections of each of its 2 stores.")
    ] = 8,
    threads: Annotated[int, typer.Option(min=1, max=MAX_THREADS, help="Requests at once.")] = 64,
) -> None:
    """Serve a study's database to many workers over gRPC (Optuna's storage proxy, and sweep's
    results table beside it): workers join with --storage grpc://HOST:PORT, and the database
    sees the proxy's pool of connections, not one set per worker."""
    import time

    from sweep.storage_proxy import ProxyRequest, describe, start_proxy

    request = ProxyRequest(storage, host, port, pool, threads)
    proxy = start_proxy(request)
    try:
        console.print(describe(request, proxy.port))
        if host not in ("127.0.0.1", "localhost", "::1"):
            err_console.print(
                "[yellow]the proxy has no authentication: whoever reaches this address can read "
                "and change the study; keep it on a private network[/]"
            )
        console.print(
            f"workers: SWEEP_STORAGE=grpc://{host}:{proxy.port} sweep worker --study NAME "
            "(Ctrl-C stops the proxy)"
        )
        while True:  # in steps: SIGTERM may reach one of gRPC's threads, which does not wake
            time.sleep(0.5)  # a main thread blocked for good; a step's end runs its handler
    finally:
        proxy.stop()


@command()
def status(
    study: SpecArg = DEFAULT_STUDY,
    model: ModelOpt = None,
    storage: StorageOpt = None,
    study_name: StudyNameOpt = None,
) -> None:
    """Show a study's progress: complete, running, failed (with reasons), best so far."""
    from sweep.status import print_status
    from sweep.study import StudyAddress

    print_status(StudyAddress(study, model, storage, study_name).open(), console)


@command()
def report(
    study: SpecArg = DEFAULT_STUDY,
    model: ModelOpt = None,
    storage: StorageOpt = None,
    study_name: StudyNameOpt = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder to write (default: runs/<study>-report).")
    ] = None,
    x: Annotated[
        str,
        typer.Option(help="Compression axis of the SrCr plot: tcr, real_ratio or deploy_ratio."),
    ] = "tcr",
    png: Annotated[bool, typer.Option(help="Also write PNG plots (needs Chromium).")] = True,
) -> None:
    """Write a study's Pareto plots (HTML, PNG), the paper's table (markdown, CSV) and a CSV of
    every trial, and print the front and the table."""
    from sweep.console import front_tables, paper_rich_table
    from sweep.report import write_report
    from sweep.spec import RUNS
    from sweep.study import StudyAddress

    if x not in ("tcr", "real_ratio", "deploy_ratio"):
        raise OptionError(f"--x must be 'tcr', 'real_ratio' or 'deploy_ratio', got {x!r}")
    loaded = StudyAddress(study, model, storage, study_name).open()
    written = write_report(loaded, out or RUNS / f"{loaded.study_name}-report", x=x, png=png)
    console.print(*front_tables(written.frame, x=x))
    if written.table is not None:
        console.print(paper_rich_table(written.table))
    for note in written.notes:
        console.print(f"[yellow]{note}[/]")
    for path in written.files:
        console.print(f"wrote {path}")


@command()
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
    progress: ProgressOpt = True,
    force: ForceOpt = False,
) -> None:
    """Export a trial: the compressed checkpoint (loads with from_pretrained; quantized layers
    packed), the spec fragment that reproduces it, the llm-compressor recipe and a model card.
    A checkpoint the study's deploy runtime would refuse is written only with --force."""
    from sweep.export.service import ExportRequest, export_trial
    from sweep.study import StudyAddress

    address = StudyAddress(study, model, storage, study_name)
    request = ExportRequest(address, trial, out, _bars(progress), force)
    done = export_trial(request, ConsoleEvents())
    for path in done.files:
        console.print(f"wrote {path}")
    console.print(f"load it with AutoModelForCausalLM.from_pretrained({str(done.folder)!r})")


@command()
def compress(
    spec_path: Annotated[
        Path, typer.Argument(help="A spec holding one configuration (sweep export writes one).")
    ],
    out: Annotated[Path | None, typer.Option(help="Also write the checkpoint folder here.")] = None,
    progress: ProgressOpt = True,
    force: ForceOpt = False,
) -> None:
    """Compress the model by a spec's one configuration, evaluate it (and the base model, for
    Sr), print its metrics and optionally write the checkpoint folder."""
    from sweep.console import metrics_table
    from sweep.export.service import CompressRequest, compress_spec

    request = CompressRequest(spec_path, out, _bars(progress), force)
    done = compress_spec(request, ConsoleEvents())
    console.print(metrics_table(done.result.config, done.result.measurement))
    for path in done.files:
        console.print(f"wrote {path}")


@command(interrupted="dashboard stopped")
def dashboard(
    study: SpecArg = DEFAULT_STUDY,
    storage: StorageOpt = None,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to serve on.")] = 8080,
) -> None:
    """Serve the study's storage with optuna-dashboard."""
    from sweep.dashboard import serve_dashboard
    from sweep.spec import load_spec
    from sweep.storage import existing_storage

    backend = existing_storage(storage or load_spec(study).storage_url())

    def ready(bound: int) -> None:
        console.print(f"optuna-dashboard on http://{host}:{bound} (Ctrl-C to stop)")

    serve_dashboard(backend, host, port, on_ready=ready)


if __name__ == "__main__":
    app()
