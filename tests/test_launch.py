"""The run services called directly: what `launch` and `join` report through their events, and
launches that fail or are interrupted with several workers."""

from __future__ import annotations

import json
import shutil
import signal
import time
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import optuna
import psutil
import pytest
import yaml
from optuna.trial import TrialState

from sweep.events import Events
from sweep.launch import JoinRequest, LaunchRequest, join, launch

from .helpers import sweep, sweep_async
from .toy import SLOW_ENV, slow_toy_spec, toy_spec

pytestmark = pytest.mark.slow  # whole studies through the CLI


class Recording(Events):
    """Keeps what a service reported, in order."""

    def __init__(self) -> None:
        self.seen: list[tuple] = []

    def note(self, text: str) -> None:
        self.seen.append(("note", text))

    @contextmanager
    def busy(self, text: str):
        self.seen.append(("busy", text))
        yield

    def trials_started(self, done: int, target: int) -> None:
        self.seen.append(("started", done, target))

    def trial_measured(self, number, config, m) -> None:
        self.seen.append(("measured", number, config.key()))

    def trial_reused(self, number, config) -> None:
        self.seen.append(("reused", number, config.key()))

    def trial_failed(self, number, config, reason) -> None:
        self.seen.append(("failed", number, reason))

    def trials_finished(self, done: int, seconds: float) -> None:
        self.seen.append(("finished", done))

    def kinds(self) -> list[str]:
        return [e[0] for e in self.seen]

    def texts(self, kind: str) -> list[str]:
        return [e[1] for e in self.seen if e[0] == kind]


def _grid_spec(toy_dir: Path, folder: Path, name: str) -> Path:
    data = yaml.safe_load(toy_spec(toy_dir, name, sparsity={"values": [0.0]}, bits=[4, 8, 16],
                                   orders=["prune_first"]).read_text())  # fmt: skip
    data["sampler"] = {"name": "grid", "seed": 0}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_launch_then_join_report_through_their_events(toy_dir: Path, tmp_path: Path):
    spec = _grid_spec(toy_dir, tmp_path, "svc")
    url = f"sqlite:///{tmp_path / 'svc.db'}"
    events = Recording()
    outcome = launch(LaunchRequest(spec, trials=5, storage=url, progress=False), events)

    assert len(outcome.frame) == 3  # the grid holds 3 configurations, fewer than asked
    assert not (tmp_path / "svc-pareto.html").exists()  # the service writes no plot: the CLI does
    measured = sorted(e[2] for e in events.seen if e[0] == "measured")
    assert measured == sorted(outcome.frame["config"]) == ["base", "rtn-w4-g32-asym",
                                                           "rtn-w8-g32-asym"]  # fmt: skip
    kinds = events.kinds()
    assert kinds.index("started") < kinds.index("measured") and kinds[-1] == "finished"
    assert ("started", 0, 5) in events.seen and ("finished", 3) in events.seen
    notes = events.texts("note")
    assert "grid: 3 distinct configurations, each visited once" in notes
    assert any(n.startswith("base model: toy_recall ") for n in notes)
    assert "evaluating the base model (once per study)" in events.texts("busy")

    joined = Recording()  # the study is done: a joining worker reads its spec and base, and stops
    join(JoinRequest(url, "svc", progress=False), joined)
    assert ("started", 3, 5) in joined.seen and ("finished", 3) in joined.seen
    assert "measured" not in joined.kinds()
    assert "evaluating the base model (once per study)" not in joined.texts("busy")


def _worker_processes(storage: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "worker" in cmd and storage in cmd:
            found.append(p)
    return found


def test_a_launch_that_fails_on_its_base_model_starts_no_worker(toy_dir: Path, tmp_path: Path):
    # the toy task with every marked answer wrong: the base model scores below chance
    tasks = tmp_path / "tasks"
    shutil.copytree(toy_dir / "tasks", tasks)
    data_file = tasks / "toy_recall" / "test.jsonl"
    rows = [json.loads(line) for line in data_file.read_text().splitlines()]
    data_file.write_text("".join(json.dumps({**r, "answer": (r["answer"] + 1) % 4}) + "\n"
                                 for r in rows))  # fmt: skip
    spec = toy_spec(toy_dir, "chance")
    data = yaml.safe_load(spec.read_text())
    data["evaluation"]["include_path"] = str(tasks)
    spec = tmp_path / "chance.yaml"
    spec.write_text(yaml.safe_dump(data))
    url = f"sqlite:///{tmp_path / 'chance.db'}"

    start = time.monotonic()
    result = sweep("run", str(spec), "--workers", "3", "--storage", url, cwd=tmp_path, timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "at or below chance" in result.stderr and "Traceback" not in result.stderr
    assert time.monotonic() - start < 120  # workers waiting on a base never stored took 600 s
    assert not _worker_processes(url)


def _wait_for_workers(url: str, name: str, n: int, log: Path, timeout: float = 300) -> None:
    """Until ``n`` processes have run trials of study ``name``."""
    deadline = time.monotonic() + timeout
    workers: set[str] = set()
    while len(workers) < n and time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            study = optuna.load_study(study_name=name, storage=url)
            workers = {t.user_attrs["worker"] for t in study.trials if "worker" in t.user_attrs}
        except KeyError:
            continue
    assert len(workers) == n, log.read_text()


def _wait_for_fresh_trial(url: str, name: str, log: Path, timeout: float = 300) -> None:
    """Until a trial of study ``name`` has run under 2 s (with trials of seconds, it is still
    running when the caller acts)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        study = optuna.load_study(study_name=name, storage=url)
        now = datetime.now()
        if any(
            "config_key" in t.user_attrs and now - t.datetime_start < timedelta(seconds=2)
            for t in study.get_trials(states=(TrialState.RUNNING,))
        ):
            return
        time.sleep(0.1)
    raise AssertionError(log.read_text())


def test_ctrl_c_stops_the_other_workers_and_leaves_no_trial_running(toy_dir: Path, tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'stop.db'}"
    spec = toy_spec(toy_dir, "stop")
    run = sweep_async("run", str(spec), "--workers", "2", "--trials", "60", "--storage", url,
                      cwd=tmp_path)  # fmt: skip
    _wait_for_workers(url, "stop", 2, tmp_path / "sweep.log")
    children = psutil.Process(run.pid).children(recursive=True)
    assert children
    for child in children:  # the storage URL (and any password in it) is not on their command line
        assert url not in " ".join(child.cmdline())

    run.send_signal(signal.SIGINT)
    assert run.wait(timeout=60) == 130
    gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, f"workers still running: {alive}"
    study = optuna.load_study(study_name="stop", storage=url)
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) < 60


def test_sigterm_stops_the_run_and_its_workers_as_ctrl_c_does(
    toy_dir: Path, tmp_path: Path, monkeypatch
):
    # trials of seconds: a trial seen running is still running at the signal on a loaded machine
    monkeypatch.setenv(SLOW_ENV, "0.01")
    url = f"sqlite:///{tmp_path / 'term.db'}"
    spec = slow_toy_spec(toy_dir, tmp_path, "term")
    run = sweep_async("run", str(spec), "--workers", "3", "--trials", "60", "--storage", url,
                      cwd=tmp_path)  # fmt: skip
    _wait_for_workers(url, "term", 3, tmp_path / "sweep.log")
    _wait_for_fresh_trial(url, "term", tmp_path / "sweep.log")
    children = psutil.Process(run.pid).children(recursive=True)
    assert len(children) == 2
    before = optuna.load_study(study_name="term", storage=url).trials
    kept = {t.number: t.values for t in before if t.state == TrialState.COMPLETE}

    run.send_signal(signal.SIGTERM)  # what timeout, systemd, SLURM and Kubernetes send
    assert run.wait(timeout=120) == 143
    gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, f"workers still running: {alive}"
    log = (tmp_path / "sweep.log").read_text()
    assert "complete ones are kept (SIGTERM)" in log and "Traceback" not in log

    study = optuna.load_study(study_name="term", storage=url)
    assert not study.get_trials(states=(TrialState.RUNNING,))
    for number, values in kept.items():  # no trial lost
        assert study.trials[number].state == TrialState.COMPLETE
        assert study.trials[number].values == values
    failed_before = {t.number for t in before if t.state == TrialState.FAIL}
    stopped = [
        t for t in study.trials if t.state == TrialState.FAIL and t.number not in failed_before
    ]
    assert stopped, "no trial was running"
    for t in stopped:  # each stored as interrupted, so that the next run takes it up first
        assert t.user_attrs["interrupted"] is True
        assert t.user_attrs["fail_reason"] in ("Terminated: SIGTERM", "KeyboardInterrupt: ")
