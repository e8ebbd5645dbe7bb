"""The Kubernetes manifest that ships with sweep, and `sweep submit --kubernetes`, which fills in
its Job for a study. No cluster: the manifest is parsed and its worker command checked against
the command line it calls."""

from __future__ import annotations

from pathlib import Path

import optuna
import typer.main
import yaml

from sweep.cli import app
from sweep.kubernetes import GPU, MANIFEST, manifest_documents, object_name, worker_job
from sweep.study import current_run

from .helpers import REPO, spec_data, sweep


def _job(documents: list[dict]) -> dict:
    return next(d for d in documents if d["kind"] == "Job")


def _container(job: dict) -> dict:
    return job["spec"]["template"]["spec"]["containers"][0]


def _worker_options() -> set[str]:
    command = typer.main.get_command(app).commands["worker"]
    return {opt for param in command.params for opt in [*param.opts, *param.secondary_opts]}


def test_the_shipped_manifest_runs_sweep_worker_with_one_gpu_and_the_url_from_a_secret():
    documents = manifest_documents()
    assert sorted(d["kind"] for d in documents) == [
        "Deployment", "Job", "PersistentVolumeClaim", "Service",
    ]  # fmt: skip
    job = _job(documents)
    container = _container(job)
    assert container["command"] == ["sweep", "worker"]
    options = [a for a in container["args"] if a.startswith("--")]
    assert set(options) <= _worker_options(), "the Job passes options `sweep worker` lacks"
    assert container["resources"]["limits"][GPU] == 1
    env = {e["name"]: e for e in container["env"]}
    assert env["SWEEP_STORAGE"]["valueFrom"]["secretKeyRef"] == {
        "name": "sweep-storage",
        "key": "url",
    }
    # $(WORKER_INDEX) is expanded by Kubernetes only from a variable the container declares
    assert "$(WORKER_INDEX)" in container["args"] and "WORKER_INDEX" in env
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"]
    assert job["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 30
    postgres = next(d for d in documents if d["kind"] == "Deployment")
    pg_env = {e["name"]: e for e in postgres["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "secretKeyRef" in pg_env["POSTGRES_PASSWORD"]["valueFrom"]
    text = MANIFEST.read_text()
    assert "postgresql+psycopg2://" not in yaml.safe_dump(documents)  # no URL, only in comments
    assert "PASSWORD@" in text  # the comment that says how to make the Secret


def test_the_job_is_filled_in_for_a_study():
    job = yaml.safe_load(worker_job("paper-Llama-3.1-8B", 16, 2))
    assert job["metadata"]["name"] == "sweep-workers-paper-llama-3-1-8b"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 16
    container = _container(job)
    assert container["args"][container["args"].index("--study") + 1] == "paper-Llama-3.1-8B"
    assert container["resources"]["limits"][GPU] == 2
    cpu_only = _container(yaml.safe_load(worker_job("s", 1, 0)))
    assert GPU not in cpu_only["resources"]["limits"]
    name = object_name("A" * 80 + "_x")
    assert len(name) <= 63 and name == name.lower() and not name.endswith("-")


def _spec(tmp: Path) -> Path:
    spec = tmp / "demo.yaml"
    spec.write_text(yaml.safe_dump(spec_data(REPO / "studies/demo.yaml")))
    return spec


def test_submit_kubernetes_refuses_sqlite_and_slurm_options(tmp_path: Path):
    spec = _spec(tmp_path)
    done = sweep("submit", str(spec), "--kubernetes", cwd=tmp_path)
    assert done.returncode == 2 and "cannot share the SQLite file" in done.stderr
    url = "postgresql+psycopg2://u:hunter2@db/x"
    done = sweep(
        "submit", str(spec), "--kubernetes", "--time", "60", "--storage", url, cwd=tmp_path
    )
    assert done.returncode == 2 and "--time: SLURM's options" in done.stderr
    done = sweep("submit", str(spec), "--kubernetes", "--slurm", cwd=tmp_path)
    assert done.returncode == 2 and "one of them" in done.stderr
    done = sweep(
        "submit", str(spec), "--kubernetes", "--dry-run", "--workers", "4", "--storage", url,
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0
    assert _job([yaml.safe_load(done.stdout)])["spec"]["parallelism"] == 4
    assert "hunter2" not in done.stdout + done.stderr and not (tmp_path / "runs").exists()


def test_submit_kubernetes_prepares_the_study_and_writes_its_job(tmp_path: Path, postgres_url):
    spec = _spec(tmp_path)
    done = sweep(
        "submit", str(spec), "--kubernetes", "--workers", "8", "--trials", "20", "--storage",
        postgres_url, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    written = tmp_path / "runs" / "demo-kubernetes" / "workers.yaml"
    assert f"kubectl apply -f {written.relative_to(tmp_path)}" in done.stdout
    assert yaml.safe_load(written.read_text())["spec"]["parallelism"] == 8
    study = optuna.load_study(study_name="demo", storage=postgres_url)
    assert current_run(study).budget == 20  # the workers join this run
    assert "sweep:sweep@" not in done.stdout + done.stderr
