"""`sweep submit`: a study's workers as a scheduler's job, a SLURM job array or a Kubernetes
Job.

The submitting machine (a login node) loads no model: it checks the spec and the storage,
creates or opens the study, starts its run (the budget of new configurations) and queues
``search.first``. For SLURM it then writes the array's script and the private file of the
storage URL into ``runs/<study>-slurm/`` and submits the script; for Kubernetes it writes the
Job into ``runs/<study>-kubernetes/`` for ``kubectl apply`` (the URL is in a Secret). The
workers join the run as ``sweep worker`` does; the first to start evaluates the base model
while the others wait for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sweep.errors import UserError
from sweep.events import Events
from sweep.kubernetes import WORKERS_FILE, worker_job
from sweep.no_follow import PRIVATE, refuse_links, write_text
from sweep.plan import make_plan
from sweep.results import ResultsTable
from sweep.slurm import (
    SCRIPT_FILE,
    URL_FILE,
    ArrayRequest,
    batch_script,
    sbatch,
    sbatch_path,
)
from sweep.space import first_configs
from sweep.spec import RUNS, StudySpec, load_spec, with_overrides
from sweep.storage import display, sqlite_path
from sweep.study import Run, open_study, preflight, start_run

JOB_FILE = "job.json"


class SubmitError(UserError):
    """A submission sweep refuses before writing anything."""


@dataclass(frozen=True)
class SubmitRequest:
    """`sweep submit`'s arguments."""

    spec_path: Path
    scheduler: str  # "slurm" or "kubernetes"
    workers: int
    model: str | None = None
    trials: int | None = None
    storage: str | None = None
    study_name: str | None = None
    gpus_per_worker: int = 1
    cpus_per_worker: int | None = None
    partition: str | None = None
    time: str | None = None
    dry_run: bool = False


@dataclass(frozen=True)
class Submitted:
    """What `sweep submit` wrote (the batch script or the Job), where, and the SLURM job id
    (None on a dry run, and for Kubernetes, where the user applies the Job)."""

    script: str
    folder: Path
    job_id: str | None
    file: Path | None = None


def absolute_url(url: str) -> str:
    """``url`` with a relative SQLite path made absolute: the tasks may start elsewhere."""
    path = sqlite_path(url)
    return url if path is None or path.is_absolute() else f"sqlite:///{path.resolve()}"


def submit(request: SubmitRequest, events: Events) -> Submitted:
    """Prepare the study and hand its workers to the scheduler (or, on a dry run, only show
    what would be submitted)."""
    spec = with_overrides(load_spec(request.spec_path), request.model, request.study_name)
    first_configs(spec.search)
    url = absolute_url(request.storage or spec.storage_url())
    if request.scheduler == "kubernetes":
        return _kubernetes(request, spec, url, events)
    folder = RUNS / f"{spec.name}-slurm"
    array = ArrayRequest(
        spec.name, request.workers, folder, request.gpus_per_worker, request.cpus_per_worker,
        request.partition, request.time,
    )  # fmt: skip
    script = batch_script(array, Path.cwd())
    if request.dry_run:
        return Submitted(script, folder, None)
    sbatch_path()  # before anything is written
    refuse_links(folder, *(folder / name for name in (URL_FILE, SCRIPT_FILE, JOB_FILE)))
    if sqlite_path(url) is not None:
        events.note(
            "the study is a SQLite file: every node must see it on a filesystem with working "
            "locks; for many nodes use PostgreSQL (--storage) or `sweep storage-proxy`"
        )
    run = _prepare(spec, url, request.trials or spec.trials, events)
    write_text(folder / URL_FILE, url, PRIVATE)
    write_text(folder / SCRIPT_FILE, script)
    job_id = sbatch(folder / SCRIPT_FILE)
    job = {"job_id": job_id, "study": spec.name, "run": run.id, "workers": request.workers}
    write_text(folder / JOB_FILE, json.dumps(job, indent=2) + "\n")
    events.note(
        f"study [bold]{spec.name}[/] on {display(url)}: run {run.id} computes {run.budget} new "
        f"configurations; SLURM job array {job_id}, {request.workers} workers"
    )
    return Submitted(script, folder, job_id, folder / SCRIPT_FILE)


def _kubernetes(request: SubmitRequest, spec: StudySpec, url: str, events: Events) -> Submitted:
    slurm_only = {"--cpus-per-worker": request.cpus_per_worker, "--partition": request.partition,
                  "--time": request.time}  # fmt: skip
    given = [name for name, value in slurm_only.items() if value is not None]
    if given:
        raise SubmitError(f"{', '.join(given)}: SLURM's options, not Kubernetes'")
    if sqlite_path(url) is not None:
        raise SubmitError(
            f"Kubernetes workers cannot share the SQLite file {display(url)}: give the study a "
            "database server (--storage postgresql+psycopg2://...), the one their Secret names"
        )
    folder = RUNS / f"{spec.name}-kubernetes"
    manifest = worker_job(spec.name, request.workers, request.gpus_per_worker)
    if request.dry_run:
        return Submitted(manifest, folder, None)
    refuse_links(folder, folder / WORKERS_FILE)
    run = _prepare(spec, url, request.trials or spec.trials, events)
    write_text(folder / WORKERS_FILE, manifest)
    events.note(
        f"study [bold]{spec.name}[/] on {display(url)}: run {run.id} computes {run.budget} new "
        f"configurations; its {request.workers} workers start with kubectl apply -f "
        f"{folder / WORKERS_FILE} (the Secret sweep-storage must hold this URL)"
    )
    return Submitted(manifest, folder, None, folder / WORKERS_FILE)


def _prepare(spec: StudySpec, url: str, budget: int, events: Events) -> Run:
    """Create or open the study, start its run and queue ``search.first``: what ``sweep run``
    does before its workers start, without a model."""
    preflight(spec, url)
    study = open_study(spec, url)
    ResultsTable(url).close()  # its table made now, not raced by the workers starting
    run = start_run(study, budget)
    line = make_plan(spec, worker=0, trials_before=len(study.trials)).prepare(study)
    if line:
        events.note(line)
    return run
