"""`sweep submit --slurm`: the batch script and the private URL file, and on a real SLURM
cluster (``scripts/slurm-local`` starts one on this machine; CI does) a demo study run by a
3-task job array, one task cancelled in the middle of a trial."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
import uuid
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from sweep.no_follow import PRIVATE, LinkRefused, write_text
from sweep.record import TrialRecord
from sweep.results import slurm_task, worker_id
from sweep.slurm import URL_FILE, ArrayRequest, SlurmError, batch_script
from sweep.status import worker_label

from .helpers import REPO, SWEEP, env, spec_data, sweep

SECRET_URL = "postgresql+psycopg2://sweep:hunter2@db.example/sweep"


def test_the_batch_script_runs_one_worker_per_task_and_holds_no_secret(tmp_path: Path):
    request = ArrayRequest(
        "paper", 8, tmp_path / "runs" / "paper-slurm", gpus_per_worker=1, cpus_per_worker=6,
        partition="gpu", time="04:00:00",
    )  # fmt: skip
    script = batch_script(request, tmp_path, python="/opt/venv/bin/python")
    directives = [
        line.split(" ", 1)[1] for line in script.splitlines() if line.startswith("#SBATCH")
    ]
    assert "--array=0-7" in directives
    assert "--gpus-per-task=1" in directives and "--cpus-per-task=6" in directives
    assert "--partition=gpu" in directives and "--time=04:00:00" in directives
    assert f"--output={tmp_path / 'runs/paper-slurm'}/%A_%a.log" in directives
    command = script.splitlines()[-1]
    assert command.startswith("exec /opt/venv/bin/python -m sweep.cli worker --study paper")
    assert "--index $((SLURM_ARRAY_TASK_ID + 1))" in command
    # the URL comes from the private file into the environment, never into the script
    assert f'SWEEP_STORAGE="$(cat {tmp_path / "runs/paper-slurm" / URL_FILE})"' in script
    assert "postgresql" not in script and "--storage" not in script
    # bash reads it
    done = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert done.returncode == 0, done.stderr


def test_no_gpu_asked_when_a_worker_needs_none(tmp_path: Path):
    script = batch_script(ArrayRequest("s", 2, tmp_path, gpus_per_worker=0), tmp_path)
    assert "gpus" not in script and "--array=0-1" in script


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("time", "1:2:3:4", "HH:MM:SS"),
        ("time", "soon", "minutes"),
        ("partition", "a b;rm", "sinfo"),
    ],
)
def test_a_bad_time_or_partition_is_refused_saying_what_is_allowed(tmp_path, field, value, allowed):
    request = ArrayRequest("s", 2, tmp_path, **{field: value})
    with pytest.raises(SlurmError, match=allowed):
        batch_script(request, tmp_path)


def test_the_url_file_is_private_from_its_first_byte_and_not_written_through_a_link(tmp_path):
    path = tmp_path / "slurm" / URL_FILE
    write_text(path, SECRET_URL, PRIVATE)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == SECRET_URL
    path.chmod(0o644)  # an old file, readable by all: made private again
    write_text(path, "sqlite:////x.db", PRIVATE)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == "sqlite:////x.db"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "link").symlink_to(elsewhere / "file")
    (tmp_path / "folder-link").symlink_to(elsewhere)
    for target in (tmp_path / "link", tmp_path / "folder-link" / URL_FILE):
        with pytest.raises(LinkRefused, match="symbolic link"):
            write_text(target, SECRET_URL, PRIVATE)
    assert list(elsewhere.iterdir()) == []


def test_submit_writes_nothing_through_a_planted_link(tmp_path: Path):
    spec = tmp_path / "demo.yaml"
    spec.write_text(yaml.safe_dump(spec_data(REPO / "studies/demo.yaml")))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "demo-kubernetes").symlink_to(elsewhere)
    url = "postgresql+psycopg2://u:p@127.0.0.1:1/x"  # refused before the study is touched
    done = sweep("submit", str(spec), "--kubernetes", "--storage", url, cwd=tmp_path)
    assert done.returncode == 2 and "demo-kubernetes is a symbolic link" in done.stderr
    assert list(elsewhere.iterdir()) == []


def test_dry_run_prints_the_script_and_writes_nothing(tmp_path: Path):
    spec = tmp_path / "demo.yaml"
    spec.write_text(yaml.safe_dump(spec_data(REPO / "studies/demo.yaml")))
    done = sweep(
        "submit", str(spec), "--slurm", "--workers", "3", "--dry-run", "--storage", SECRET_URL,
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "#SBATCH --array=0-2" in done.stdout and "sweep.cli worker --study demo" in done.stdout
    assert "hunter2" not in done.stdout + done.stderr
    assert not (tmp_path / "runs").exists()


def test_submit_asks_where_and_says_when_sbatch_is_missing(tmp_path: Path):
    spec = tmp_path / "demo.yaml"
    spec.write_text(yaml.safe_dump(spec_data(REPO / "studies/demo.yaml")))
    done = sweep("submit", str(spec), "--workers", "2", cwd=tmp_path)
    assert done.returncode == 2 and "--slurm" in done.stderr
    no_slurm = {**env(), "PATH": str(tmp_path)}  # a PATH without sbatch
    done = subprocess.run(
        [*SWEEP, "submit", str(spec), "--slurm"],
        cwd=tmp_path, env=no_slurm, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2
    assert "sbatch is not on this machine's PATH" in done.stderr and "--dry-run" in done.stderr
    assert not (tmp_path / "runs").exists()  # nothing written: no study, no URL file


def test_a_worker_in_an_array_task_is_named_by_it(monkeypatch):
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "1234")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    assert slurm_task() == "1234_2"
    name = worker_id()
    assert name.startswith("slurm 1234_2 ")
    assert worker_label(name).startswith("slurm task 1234_2 on ")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID")
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    monkeypatch.setenv("SLURM_JOB_ID", "99")
    assert slurm_task() == "99"
    monkeypatch.delenv("SLURM_JOB_ID")
    assert " " not in worker_id() and " pid " in worker_label(worker_id())


# --- on a real cluster -------------------------------------------------------------------------


def _cluster() -> str | None:
    """Why no SLURM cluster can run the test here, or None when one answers."""
    if shutil.which("sbatch") is None:
        return "no sbatch on PATH (`make test-slurm` starts a local cluster, as root)"
    done = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    states = done.stdout.split()
    if done.returncode != 0 or not any(s.startswith(("idle", "mix", "alloc")) for s in states):
        return f"no SLURM node is up ({(done.stderr or done.stdout).strip() or 'sinfo: no nodes'})"
    return None


@pytest.fixture
def slurm_cluster() -> None:
    why = _cluster()
    if why is not None:
        if os.environ.get("SWEEP_TEST_SLURM") == "1":  # CI started one: its absence is a failure
            pytest.fail(why)
        pytest.skip(why)


def _squeue(job: str) -> list[str]:
    done = subprocess.run(
        ["squeue", "-h", "-j", job, "-o", "%i %T"], capture_output=True, text=True
    )
    return done.stdout.split("\n") if done.stdout.strip() else []


def _until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.mark.slow
@pytest.mark.slurm
def test_a_job_array_runs_the_study_and_a_cancelled_task_loses_nothing(
    tmp_path: Path, slurm_cluster
):
    name = f"slurm-{uuid.uuid4().hex[:6]}"
    data = spec_data(REPO / "studies/demo.yaml")
    data.update(name=name, trials=5, sampler={"name": "random", "seed": 3})
    data["evaluation"]["stages"] = {"mode": "off"}  # every trial evaluated in full: seconds long
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(yaml.safe_dump(data))
    done = sweep(
        "submit", str(spec), "--slurm", "--workers", "3", "--gpus-per-worker", "0",
        "--cpus-per-worker", "1", "--time", "20", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "runs" / f"{name}-slurm"
    job = json.loads((folder / "job.json").read_text())["job_id"]
    assert stat.S_IMODE((folder / URL_FILE).stat().st_mode) == 0o600
    url = f"sqlite:///{tmp_path / 'runs' / name}.db"
    try:
        # a trial of an array task, a second into its work
        def running_task() -> tuple[int, str] | None:
            study = optuna.load_study(study_name=name, storage=url)
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                task = (t.user_attrs.get("worker") or "").split(" ")
                old = time.time() - t.datetime_start.timestamp() > 1.0
                if len(task) == 3 and task[0] == "slurm" and old:
                    return t.number, task[1]
            return None

        victim, task = _until(running_task, 300, "a trial running on an array task")
        status = sweep("status", str(spec), cwd=tmp_path)
        assert f"slurm task {task} on" in status.stdout  # sweep status names the task
        subprocess.run(["scancel", task], check=True)
        _until(lambda: not _squeue(job), 600, f"job array {job} to end")
    finally:
        subprocess.run(["scancel", job], capture_output=True)

    study = optuna.load_study(study_name=name, storage=url)
    records = [TrialRecord.from_trial(t) for t in study.get_trials(deepcopy=False)]
    cancelled = records[victim]
    assert cancelled.state == TrialState.FAIL and cancelled.interrupted
    assert cancelled.fail_reason == "Terminated: SIGTERM"
    assert all(r.state != TrialState.RUNNING for r in records)  # 0 lost: none left running
    computed = [r.config_key for r in records if r.state == TrialState.COMPLETE and r.computed]
    assert len(computed) == len(set(computed)) == 5  # the budget, 0 computed twice
    retried = [r for r in records if r.number > victim and r.config_key == cancelled.config_key]
    assert [r.state for r in retried] == [TrialState.COMPLETE]  # retried, by another task
    assert retried[0].worker.split(" ")[1] != task
    logs = sorted(p.name for p in folder.glob(f"{job}_*.log"))
    assert logs == [f"{job}_0.log", f"{job}_1.log", f"{job}_2.log"]
    assert "complete ones are kept (SIGTERM)" in (folder / f"{task}.log").read_text()
    assert "hunter2" not in (folder / "workers.sbatch").read_text()


@pytest.mark.slurm
def test_a_refused_array_says_why_and_where_the_script_is(tmp_path: Path, slurm_cluster):
    spec = tmp_path / "demo.yaml"
    spec.write_text(yaml.safe_dump(spec_data(REPO / "studies/demo.yaml")))
    args = ("submit", str(spec), "--slurm", "--gpus-per-worker", "0", "--partition", "nosuch")
    done = sweep(*args, cwd=tmp_path)
    assert done.returncode == 2
    assert "sbatch refused the array (runs/demo-slurm/workers.sbatch)" in done.stderr
    assert "partition" in done.stderr.lower()
