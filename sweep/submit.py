"""`sweep submit`: a study's workers as a scheduler's job, here a SLURM job array.

The submitting machine (a login node) loads no model: it checks the spec and the storage,
creates or opens the study, starts its run (the budget of new configurations) and queues
``search.first``, then writes the array's script and the private file of the storage URL into
``runs/<study>-slurm/`` and submits the script. The tasks join the run as ``sweep worker``
does; the first to start evaluates the base model while the others wait for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sweep.events import Events
from sweep.plan import make_plan
from sweep.results import ResultsTable
from sweep.slurm import (
    SCRIPT_FILE,
    URL_FILE,
    ArrayRequest,
    batch_script,
    sbatch,
    sbatch_path,
    write_private,
)
from sweep.space import first_configs
from sweep.spec import RUNS, load_spec, with_overrides
from sweep.storage import display, sqlite_path
from sweep.study import open_study, preflight, start_run

JOB_FILE = "job.json"


@dataclass(frozen=True)
class SubmitRequest:
    """`sweep submit`'s arguments."""

    spec_path: Path
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
    """What `sweep submit` wrote, and the job id (None on a dry run)."""

    script: str
    folder: Path
    job_id: str | None


def absolute_url(url: str) -> str:
    """``url`` with a relative SQLite path made absolute: the tasks may start elsewhere."""
    path = sqlite_path(url)
    return url if path is None or path.is_absolute() else f"sqlite:///{path.resolve()}"


def submit(request: SubmitRequest, events: Events) -> Submitted:
    spec = with_overrides(load_spec(request.spec_path), request.model, request.study_name)
    first_configs(spec.search)
    url = absolute_url(request.storage or spec.storage_url())
    folder = RUNS / f"{spec.name}-slurm"
    array = ArrayRequest(
        spec.name, request.workers, folder, request.gpus_per_worker, request.cpus_per_worker,
        request.partition, request.time,
    )  # fmt: skip
    script = batch_script(array, Path.cwd())
    if request.dry_run:
        return Submitted(script, folder, None)
    sbatch_path()  # before anything is written
    preflight(spec, url)
    if sqlite_path(url) is not None:
        events.note(
            "the study is a SQLite file: every node must see it on a filesystem with working "
            "locks; for many nodes use PostgreSQL (--storage) or `sweep storage-proxy`"
        )
    study = open_study(spec, url)
    ResultsTable(url).close()  # its table made now, not raced by the tasks starting
    run = start_run(study, request.trials or spec.trials)
    line = make_plan(spec, worker=0, trials_before=len(study.trials)).prepare(study)
    if line:
        events.note(line)
    write_private(folder / URL_FILE, url)
    (folder / SCRIPT_FILE).write_text(script)
    job_id = sbatch(folder / SCRIPT_FILE)
    job = {"job_id": job_id, "study": spec.name, "run": run.id, "workers": request.workers}
    (folder / JOB_FILE).write_text(json.dumps(job, indent=2) + "\n")
    events.note(
        f"study [bold]{spec.name}[/] on {display(url)}: run {run.id} computes {run.budget} new "
        f"configurations; SLURM job array {job_id}, {request.workers} workers"
    )
    return Submitted(script, folder, job_id)
