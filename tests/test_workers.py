"""Several workers share one study through SQLite or PostgreSQL; a dead one loses nothing."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
import yaml
from optuna.trial import TrialState

from sweep.launch import BASE_CLAIM
from sweep.results import results_table
from sweep.spec import load_spec
from sweep.storage import DEAD_WORKER_S, STORAGE_ENV
from sweep.storage_proxy import ProxyRequest, start_proxy
from sweep.study import open_study

from .helpers import SWEEP, env, sweep, sweep_async
from .toy import SLOW_ENV, slow_toy_spec, toy_spec

pytestmark = pytest.mark.slow  # whole studies through the CLI


def _statuses(url: str) -> list[tuple[str, str]]:
    """(configuration, status) of each row of the results table at database ``url``."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(results_table.c.config_key, results_table.c.status)).all()
    engine.dispose()
    return [tuple(row) for row in rows]


def _computed_keys(url: str) -> list[str]:
    """The configurations the results table at database ``url`` holds as computed."""
    return [key for key, status in _statuses(url) if status == "done" and key != BASE_CLAIM]


def _check_three_workers(url: str, tmp: Path, toy: Path, database: str | None = None) -> None:
    """Three workers on ``url``; ``database``: the one behind it, where ``url`` is a proxy's."""
    database = database or url
    spec = toy_spec(toy, f"multi-{uuid.uuid4().hex[:6]}")
    data = yaml.safe_load(spec.read_text())
    data["evaluation"]["stages"] = {"mode": "off"}  # trials long enough that the workers overlap
    spec.write_text(yaml.safe_dump(data))
    name = spec.stem
    result = sweep("run", str(spec), "--workers", "3", "--trials", "9", "--storage", url, cwd=tmp)
    assert result.returncode == 0, result.stdout + result.stderr
    study = optuna.load_study(study_name=name, storage=database)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    computed = [t for t in complete if not t.user_attrs.get("reused")]
    keys = [t.user_attrs["config_key"] for t in computed]
    assert len(keys) == 9, "--trials 9 asks for 9 new configurations"
    assert len(keys) == len(set(keys)), "a configuration was computed twice"
    assert sorted(_computed_keys(database)) == sorted(keys)
    distinct = len({t.user_attrs["config_key"] for t in complete})
    reused = len(complete) - len(computed)
    assert f"9 of 9 new configurations computed; {reused} trial" in result.stdout
    assert f"{len(complete)} complete trials: {distinct} distinct configurations" in result.stdout
    assert "sweep:sweep@" not in result.stdout + result.stderr, "a password was shown"
    workers = {t.user_attrs.get("worker") for t in complete}
    assert len(workers) >= 2, f"trials ran on {workers}"


def test_three_workers_on_sqlite(tmp_path: Path, toy_dir: Path):
    _check_three_workers(f"sqlite:///{tmp_path / 'multi.db'}", tmp_path, toy_dir)


def test_three_workers_on_postgres(tmp_path: Path, postgres_url: str, toy_dir: Path):
    _check_three_workers(postgres_url, tmp_path, toy_dir)


def test_three_workers_through_the_storage_proxy(tmp_path: Path, toy_dir: Path):
    database = f"sqlite:///{tmp_path / 'multi.db'}"
    proxy = start_proxy(ProxyRequest(database, port=0))
    try:
        _check_three_workers(f"grpc://127.0.0.1:{proxy.port}", tmp_path, toy_dir, database)
    finally:
        proxy.stop()


def _claimed(url: str) -> set[str]:
    """The configurations whose claim a running trial holds."""
    return {key for key, status in _statuses(url) if status == "running"}


def _wait_for_running_trial(
    url: str, name: str, timeout: float = 240, fresh_s: float = 0.5, claimed: bool = False
) -> tuple[int, dict]:
    """A trial that started moments ago (toy trials take about a second: one caught late may
    end before the caller acts on it) after one completed, and with ``claimed`` one that holds
    its configuration's claim: its number, and the complete trials' values and attributes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            study = optuna.load_study(study_name=name, storage=url)
            complete = study.get_trials(states=(TrialState.COMPLETE,))
            running = [
                t
                for t in study.get_trials(states=(TrialState.RUNNING,))
                if "config_key" in t.user_attrs
                and datetime.now() - t.datetime_start < timedelta(seconds=fresh_s)
            ]
            if claimed and running:
                held = _claimed(url)
                running = [t for t in running if t.user_attrs["config_key"] in held]
            if complete and running:
                return running[0].number, {t.number: (t.values, t.user_attrs) for t in complete}
        except (KeyError, sa.exc.OperationalError):
            pass
        time.sleep(0.05)
    raise AssertionError("no trial started")


def _start_until_mid_trial(tmp: Path, toy: Path, name: str, trials: int):
    """Start `sweep run` and wait until a trial is running after one completed; return the
    process, the running trial's number and the complete trials' values and attributes. Its
    trials take seconds (a trial of one second, caught running on a loaded machine, could
    complete before the caller kills it); later workers of the study, in this process, run at
    full speed."""
    url = f"sqlite:///{tmp / f'{name}.db'}"
    spec = slow_toy_spec(toy, tmp, name)
    args = ("run", str(spec), "--trials", str(trials), "--storage", url)
    proc = sweep_async(*args, cwd=tmp, extra_env={SLOW_ENV: "0.005"})
    running, kept = _wait_for_running_trial(url, name)
    return url, proc, running, kept


def _assert_intact(study: optuna.Study, kept: dict) -> None:
    for number, (values, attrs) in kept.items():
        assert study.trials[number].state == TrialState.COMPLETE
        assert study.trials[number].values == values
        assert study.trials[number].user_attrs == attrs


def test_killed_worker_loses_nothing(tmp_path: Path, toy_dir: Path):
    url, first, victim, kept = _start_until_mid_trial(tmp_path, toy_dir, "kill", 4)
    params = optuna.load_study(study_name="kill", storage=url).trials[victim].params
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)

    start = time.monotonic()
    second = sweep("worker", "--storage", url, "--study", "kill", "--no-progress", cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    # the dead trial is failed GRACE_S (20 s) after its last beat, while the worker computes
    # other configurations or waits for it, and its claim is free then too (it used to stay
    # claimed for 60 s, silently)
    assert time.monotonic() - start < 50

    study = optuna.load_study(study_name="kill", storage=url)
    assert study.trials[victim].state == TrialState.FAIL
    retried = [
        t for t in study.trials[victim + 1 :] if t.system_attrs.get("failed_trial") == victim
    ]
    assert retried and retried[0].params == params, "the dead trial's configuration was not retried"
    computed = [t for t in study.get_trials(states=(TrialState.COMPLETE,))
                if not t.user_attrs.get("reused")]  # fmt: skip
    assert len(computed) == 4
    _assert_intact(study, kept)


def test_a_failing_trial_is_stored_with_its_reason_and_the_study_goes_on(
    tmp_path: Path, toy_dir: Path
):
    url = f"sqlite:///{tmp_path / 'fail.db'}"
    # the toy model's input sizes are not multiples of 7: every 3:7 trial raises; with seed 3
    # the random sampler proposes 3:7 second, then unstructured twice
    spec = toy_spec(toy_dir, "fail", seed=3, patterns=["3:7", "unstructured"], bits=[4, 16])
    result = sweep("run", str(spec), "--trials", "3", "--storage", url, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    study = optuna.load_study(study_name="fail", storage=url)
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert failed, "no 3:7 trial was sampled"
    assert all("divisible by 7" in t.user_attrs["fail_reason"] for t in failed)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 3
    assert max(t.number for t in failed) < max(t.number for t in study.trials)


def test_ctrl_c_fails_the_running_trial_and_keeps_the_rest(
    tmp_path: Path, toy_dir: Path, monkeypatch
):
    # trials of seconds, so that the trial seen running is still running at the signal, on a
    # loaded machine too
    monkeypatch.setenv(SLOW_ENV, "0.01")
    url = f"sqlite:///{tmp_path / 'interrupt.db'}"
    spec = slow_toy_spec(toy_dir, tmp_path, "interrupt")
    run = sweep_async("run", str(spec), "--trials", "6", "--storage", url, cwd=tmp_path)
    victim, kept = _wait_for_running_trial(url, "interrupt", fresh_s=3, claimed=True)
    run.send_signal(signal.SIGINT)
    assert run.wait(timeout=60) == 130
    log = (tmp_path / "sweep.log").read_text()
    assert "interrupted" in log and "Traceback" not in log

    study = optuna.load_study(study_name="interrupt", storage=url)
    interrupted = study.trials[victim]
    assert interrupted.state == TrialState.FAIL
    assert interrupted.user_attrs["fail_reason"].startswith("KeyboardInterrupt")
    assert not study.get_trials(states=(TrialState.RUNNING,))
    _assert_intact(study, kept)
    statuses = dict(_statuses(url))
    # its claim is released (a later trial of that configuration computes it again)
    assert statuses[interrupted.user_attrs["config_key"]] == "failed"

    # the next run takes it up first, whatever the sampler (here random)
    again = sweep("run", str(spec), "--trials", "1", "--storage", url, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    study = optuna.load_study(study_name="interrupt", storage=url)
    redone = [t for t in study.trials[victim + 1 :] if t.state == TrialState.COMPLETE
              and t.user_attrs["config_key"] == interrupted.user_attrs["config_key"]]  # fmt: skip
    assert redone, "the interrupted configuration was not computed again"


def test_runs_creating_one_new_study_at_once_all_get_it(postgres_url: str, toy_dir: Path):
    spec = load_spec(toy_spec(toy_dir, "race"))
    barrier = threading.Barrier(6)
    opened: list[int] = []
    errors: list[BaseException] = []

    def open_it() -> None:
        barrier.wait()
        try:
            opened.append(open_study(spec, postgres_url)._study_id)
        except BaseException as err:  # noqa: BLE001 - every failure is what the test looks for
            errors.append(err)

    threads = [threading.Thread(target=open_it) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(opened) == 6 and len(set(opened)) == 1


def test_another_study_with_the_same_context_reuses_results(tmp_path: Path, toy_dir: Path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    spec = toy_spec(toy_dir, "first", sparsity={"values": [0.0]}, bits=[4, 16],
                    orders=["prune_first"])  # fmt: skip
    data = yaml.safe_load(spec.read_text())
    data["sampler"] = {"name": "grid", "seed": 0}
    spec.write_text(yaml.safe_dump(data))
    first = sweep("run", str(spec), "--trials", "2", "--storage", url, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    second = sweep("run", str(spec), "--trials", "2", "--storage", url,
                   "--study-name", "second", cwd=tmp_path)  # fmt: skip
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.count("computed before, result reused") == 2

    def by_config(name: str) -> dict[str, optuna.trial.FrozenTrial]:
        study = optuna.load_study(study_name=name, storage=url)
        trials = study.get_trials(states=(TrialState.COMPLETE,))
        return {t.user_attrs["config_key"]: t for t in trials}

    computed, reused = by_config("first"), by_config("second")
    assert set(computed) == set(reused) and len(computed) == 2
    for key, t in reused.items():
        assert t.user_attrs["reused"] is True
        assert t.values == computed[key].values
    assert sorted(_computed_keys(url)) == sorted(computed)

    # round-to-nearest reads no calibration: another calibration set shares its results (a
    # method that reads one is computed anew: tests/test_identity.py)
    data["calibration"]["samples"] = 4
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(data))
    third = sweep("run", str(other), "--trials", "1", "--storage", url,
                  "--study-name", "third", cwd=tmp_path)  # fmt: skip
    assert third.returncode == 0, third.stdout + third.stderr
    assert "computed before, result reused" in third.stdout
    assert len(_computed_keys(url)) == 2


def test_a_grid_study_ends_when_every_configuration_is_done(tmp_path: Path, toy_dir: Path):
    url = f"sqlite:///{tmp_path / 'grid.db'}"
    spec = toy_spec(toy_dir, "grid", sparsity={"values": [0.0, 0.5]}, bits=[4, 16],
                    orders=["prune_first", "quant_first"])  # fmt: skip
    data = yaml.safe_load(spec.read_text())
    data["sampler"] = {"name": "grid", "seed": 0}
    spec.write_text(yaml.safe_dump(data))
    # base, 4-bit, 50% pruned, and 50% + 4-bit in two orders: 5 configurations, though a
    # cartesian grid over the asked parameters holds 2 x 2 x 2 = 8 points
    result = sweep("run", str(spec), "--trials", "20", "--storage", url, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "grid: 5 distinct configurations" in result.stdout
    study = optuna.load_study(study_name="grid", storage=url)
    keys = [t.user_attrs["config_key"] for t in study.get_trials(states=(TrialState.COMPLETE,))]
    assert len(keys) == len(set(keys)) == 5


def _running(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    """The study's running trials that have chosen their configuration."""
    study = optuna.load_study(study_name=name, storage=url)
    return [
        t for t in study.get_trials(states=(TrialState.RUNNING,)) if "config_key" in t.user_attrs
    ]


def _of(proc: subprocess.Popen, trials: list[optuna.trial.FrozenTrial]) -> list[int]:
    return [t.number for t in trials if f":{proc.pid}:" in t.user_attrs.get("worker", "")]


@pytest.fixture
def started():
    """Processes a test starts, killed at its end if they still run (when the test failed)."""
    procs: list[subprocess.Popen] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def _until(condition, timeout: float, what: str, poll_s: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = condition()
        except (KeyError, sa.exc.OperationalError):  # the study not created yet, or busy
            found = None
        if found:
            return found
        time.sleep(poll_s)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_dead_workers_trial_is_failed_in_time_while_another_works_and_sigterm_stops_that(
    tmp_path: Path, toy_dir: Path, started: list[subprocess.Popen], monkeypatch
):
    url = f"sqlite:///{tmp_path / 'dead.db'}"
    spec = slow_toy_spec(toy_dir, tmp_path, "dead")
    # trials of seconds: one seen running is still running when the process is killed
    monkeypatch.setenv(SLOW_ENV, "0.01")
    first = sweep_async("run", str(spec), "--trials", "40", "--storage", url, cwd=tmp_path)
    started.append(first)
    _until(lambda: _running(url, "dead"), 300, "the first trial")
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [*SWEEP, "worker", "--study", "dead", "--no-progress"],
        cwd=tmp_path,
        env={**env(), STORAGE_ENV: url, SLOW_ENV: "0.08"},  # a trial of a minute or more
        stdout=log,
        stderr=log,
    )
    started.append(worker)
    working = _until(lambda: _of(worker, _running(url, "dead")), 300, "the worker's trial")
    _until(lambda: set(_of(first, _running(url, "dead"))), 120, "a trial of the first process")
    first.send_signal(signal.SIGKILL)  # mid-trial, while the worker is mid-trial too
    first.wait(timeout=30)
    killed = time.monotonic()
    running = _running(url, "dead")
    victims = sorted(set(t.number for t in running) - set(_of(worker, running)))
    assert victims, "the killed process ran no trial"

    def failed() -> bool:
        study = optuna.load_study(study_name="dead", storage=url)
        return all(study.trials[n].state == TrialState.FAIL for n in victims)

    _until(failed, DEAD_WORKER_S + 30, "the dead trial to be failed", poll_s=0.1)
    took = time.monotonic() - killed
    study = optuna.load_study(study_name="dead", storage=url)
    # failed by the live worker while it computes, not when it starts its next trial
    assert study.trials[working[0]].state == TrialState.RUNNING
    assert took <= DEAD_WORKER_S, f"the dead worker's trial was failed after {took:.1f} s"
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") in victims]
    assert retried, "the dead trial's configuration was not queued again"

    # SIGTERM to a worker acts as Ctrl-C: its running trial FAIL, interrupted; exit code 143
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 143
    output = (tmp_path / "worker.log").read_text()
    assert "complete ones are kept (SIGTERM)" in output and "Traceback" not in output
    study = optuna.load_study(study_name="dead", storage=url)
    stopped = study.trials[working[0]]
    assert stopped.state == TrialState.FAIL
    assert stopped.user_attrs["interrupted"] is True
    assert stopped.user_attrs["fail_reason"] == "Terminated: SIGTERM"
    assert not study.get_trials(states=(TrialState.RUNNING,))
