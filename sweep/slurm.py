"""SLURM job arrays of workers: the batch script, the file that carries the storage URL, and
``sbatch``. Each array task runs one ``sweep worker`` on the study's storage (one GPU each where
asked); SLURM, not sweep, schedules them, and SIGTERM from ``scancel`` or a time limit stops a
task as Ctrl-C does (its running trial FAIL, interrupted, queued again by the other workers).

The storage URL, which may hold a password, reaches the tasks through a file only the user can
read (mode 0600), read into ``SWEEP_STORAGE`` by the script: never on a command line (``ps``,
``squeue``, ``scontrol show job``) nor in the script, which SLURM keeps and shows.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from sweep.errors import UserError
from sweep.storage import STORAGE_ENV

URL_FILE = "storage-url"
SCRIPT_FILE = "workers.sbatch"
# SLURM's --time: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS
_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")
_PARTITION = re.compile(r"^[\w.-]+$")


class SlurmError(UserError):
    """A SLURM request sweep refuses, or one that SLURM refused."""


@dataclass(frozen=True)
class ArrayRequest:
    """The job array of ``workers`` tasks, each one ``sweep worker`` of ``study``."""

    study: str
    workers: int
    folder: Path  # runs/<study>-slurm: the script, the URL file and each task's log
    gpus_per_worker: int = 1
    cpus_per_worker: int | None = None
    partition: str | None = None
    time: str | None = None  # SLURM's --time
    first_index: int = 1  # worker numbers (sampler seeds) are first_index + the task's index

    def check(self) -> None:
        if self.time is not None and not _TIME.match(self.time):
            raise SlurmError(
                f"--time {self.time!r} is not a SLURM time: give minutes (90), HH:MM:SS "
                "(01:30:00) or D-HH:MM:SS (1-00:00:00)"
            )
        if self.partition is not None and not _PARTITION.match(self.partition):
            raise SlurmError(
                f"--partition {self.partition!r} is not a partition name: letters, digits, "
                "'_', '-' and '.' (sinfo lists them)"
            )


def batch_script(request: ArrayRequest, workdir: Path, python: str = sys.executable) -> str:
    """The sbatch script of the array: every path absolute, no secret in it."""
    request.check()
    folder = request.folder.resolve()
    q = shlex.quote
    directives = [
        f"--job-name=sweep-{request.study}",
        f"--array=0-{request.workers - 1}",
        f"--output={folder}/%A_%a.log",
        f"--chdir={workdir.resolve()}",
        "--ntasks=1",
    ]
    if request.gpus_per_worker:
        directives.append(f"--gpus-per-task={request.gpus_per_worker}")
    if request.cpus_per_worker:
        directives.append(f"--cpus-per-task={request.cpus_per_worker}")
    if request.partition:
        directives.append(f"--partition={request.partition}")
    if request.time:
        directives.append(f"--time={request.time}")
    lines = [
        "#!/bin/bash",
        f"# sweep workers of study {request.study}: one per array task (`sweep submit`).",
        *(f"#SBATCH {d}" for d in directives),
        "set -euo pipefail",
        "# the storage URL from a file only its owner reads: never on a command line",
        f'export {STORAGE_ENV}="$(cat {q(str(folder / URL_FILE))})"',
        "threads=${SLURM_CPUS_PER_TASK:+--threads $SLURM_CPUS_PER_TASK}",
        "# exec: SIGTERM (scancel, the time limit) reaches the worker, which stores its trial",
        f"exec {q(python)} -m sweep.cli worker --study {q(request.study)} "
        f"--index $((SLURM_ARRAY_TASK_ID + {request.first_index})) $threads --no-progress",
    ]
    return "\n".join(lines) + "\n"


def sbatch_path() -> str:
    """Where ``sbatch`` is; a clear error where it is not."""
    exe = shutil.which("sbatch")
    if exe is None:
        raise SlurmError(
            "sbatch is not on this machine's PATH: submit from a SLURM login node, or print the "
            "script with --dry-run and submit it there"
        )
    return exe


def sbatch(script: Path) -> str:
    """Submit ``script``; return the job id."""
    done = subprocess.run(
        [sbatch_path(), "--parsable", str(script)], capture_output=True, text=True
    )
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        reason = lines[-1] if lines else f"exit code {done.returncode}"
        hint = ""
        if "gres" in reason.lower() or "gpu" in reason.lower():
            hint = "; this partition has no GPUs to give: name one that has (--partition), or "
            hint += "--gpus-per-worker 0 for CPU workers"
        raise SlurmError(f"sbatch refused the array ({script}): {reason}{hint}")
    return done.stdout.strip().split(";")[0]  # "id" or "id;cluster"
