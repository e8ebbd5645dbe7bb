"""Workers: the set-up of one (model, tasks and calibration loaded once), and the processes that
run several, one per GPU where there are GPUs, sharing one study through its storage."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import torch

from sweep.calibration_data import CalibrationError, calibration_batches
from sweep.compress.calibration import Calibration, CalibrationCache
from sweep.compress.layer import requires_calibration
from sweep.evaluation.harness import Evaluator
from sweep.events import Events
from sweep.loaded_model import LoadedModel
from sweep.model import load_model, resolve_device
from sweep.space import all_configs
from sweep.spec import RUNS, StudySpec, calibration_source
from sweep.storage import STORAGE_ENV
from sweep.trial import TrialRunner
from sweep.zoo import is_named, model_folder

STOP_GRACE_S = 15.0  # how long a stopped worker gets to store its running trial as failed


def calibrating_methods(spec: StudySpec) -> list[str]:
    """The configurations of the study's space that need calibration data (statistics, or a
    calibrated activation scale), by key."""
    return sorted({c.key() for c in all_configs(spec.search) if requires_calibration(c)})


def prepare_runner(
    spec: StudySpec,
    events: Events,
    progress: bool = True,
    device: str | None = None,
    evaluate: bool = True,
) -> TrialRunner:
    """Load the model, its tokenizer, the lm-eval tasks (unless ``evaluate`` is False: a runner
    that only compresses) and the calibration set, once."""
    needs_data = calibrating_methods(spec)
    if needs_data and spec.calibration is None:
        shown = ", ".join(needs_data[:3]) + (" ..." if len(needs_data) > 3 else "")
        raise CalibrationError(
            f"the search space holds configurations that need calibration data ({shown}), and "
            "the spec has no `calibration` section"
        )
    device = resolve_device(device or spec.device)
    if is_named(spec.model):
        with events.busy(f"fetching {spec.model} (once)"):
            model_folder(spec.model, events.note)
    with events.busy(f"loading model {spec.model} on {device}"):
        model, tokenizer = load_model(spec.model, spec.dtype, device, spec.trust_remote_code)
        loaded = LoadedModel(model, tokenizer)
    evaluator = None
    if evaluate:
        with events.busy("preparing lm-eval tasks"):
            evaluator = Evaluator(spec.evaluation, model, tokenizer, device=device)
    calibration = None
    cal = spec.calibration
    if needs_data and cal is not None:
        where = calibration_source(cal)
        with events.busy(f"reading calibration data ({where})"):
            ids = calibration_batches(cal, tokenizer)
        events.note(
            f"calibration: {ids.shape[0]} samples x {ids.shape[1]} tokens from {where}, "
            f"{cal.mode} mode"
        )
        cache = CalibrationCache(cal.cache_dir or RUNS / "calibration-cache", events.note)
        calibration = Calibration(ids, cal.mode, cache, cal.batch_size)
    return TrialRunner(loaded, evaluator, calibration, progress)


def worker_devices(n: int, device: str) -> list[str]:
    """The device of each of ``n`` workers: GPUs in turn under "auto", else ``device`` for all."""
    if device == "auto":
        gpus = torch.cuda.device_count()
        return [f"cuda:{i % gpus}" for i in range(n)] if gpus else ["cpu"] * n
    return [device] * n


def cpu_threads(n_workers: int) -> int:
    """Threads per CPU worker, so that n workers share the cores instead of fighting for them."""
    return max(1, (os.cpu_count() or 1) // n_workers)


def spawn_workers(
    storage: str, study: str, devices: list[str], first_index: int = 1
) -> list[subprocess.Popen]:
    """Start ``sweep worker`` processes for ``study``, the i-th on ``devices[i]``. The storage
    URL goes through the environment, so that a password stays off their command lines."""
    threads = cpu_threads(len(devices) + first_index)
    env = {**os.environ, STORAGE_ENV: storage}
    procs: list[subprocess.Popen] = []
    try:
        for offset, device in enumerate(devices):
            cmd = [sys.executable, "-m", "sweep.cli", "worker", "--study", study,
                   "--device", device, "--index", str(first_index + offset),
                   "--threads", str(threads), "--no-progress"]  # fmt: skip
            procs.append(subprocess.Popen(cmd, env=env))
    except BaseException:  # an interruption (or a failed start) leaves none of them behind
        stop_workers(procs)
        raise
    return procs


def stop_workers(procs: list[subprocess.Popen], grace_s: float = STOP_GRACE_S) -> None:
    """Stop the workers with SIGTERM (each stores its running trial FAIL, as on Ctrl-C), and
    kill those still running after ``grace_s``, or at once when this process is interrupted
    again while it waits."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + grace_s
    try:
        for p in procs:
            with suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@contextmanager
def worker_processes(storage: str, study: str, devices: list[str]) -> Iterator[None]:
    """Workers for ``study`` on ``devices`` while the block runs: waited for when it ends, and
    stopped when it raises or this process is interrupted (Ctrl-C, SIGTERM), waiting included."""
    procs = spawn_workers(storage, study, devices)
    try:
        yield
        for p in procs:
            p.wait()
    except BaseException:
        stop_workers(procs)
        raise
