"""Workers: the set-up of one (model, tasks, calibration loaded once) and the processes that
run several, one per GPU where there are GPUs, sharing one study through its storage."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from rich.console import Console

from sweep.calibration_data import calibration_batches
from sweep.compress.calibration import CalibrationCache
from sweep.compress.layer import requires_calibration
from sweep.evaluate import Evaluator
from sweep.model import load_model, resolve_device, tensor_inventory
from sweep.space import all_configs
from sweep.spec import StudySpec
from sweep.trial import Calibration, TrialRunner

DEFAULT_CACHE_DIR = Path("runs/calibration-cache")


def space_needs_calibration(spec: StudySpec) -> bool:
    """Whether any configuration of the study's space reads calibration statistics."""
    return any(requires_calibration(c) for c in all_configs(spec.search))


def prepare_runner(
    spec: StudySpec,
    console: Console,
    progress: bool = True,
    device: str | None = None,
    evaluate: bool = True,
) -> TrialRunner:
    """Load the model, its tokenizer, the lm-eval tasks (unless ``evaluate`` is False: a runner
    that only compresses) and the calibration set, once."""
    from sweep.demo import TASKS_DIR

    device = resolve_device(device or spec.device)
    with console.status(f"loading model {spec.model} on {device}"):
        model, tokenizer = load_model(spec.model, spec.dtype, device)
    evaluator = None
    if evaluate:
        with console.status("preparing lm-eval tasks"):
            demo_tasks = [TASKS_DIR] if TASKS_DIR.is_dir() else []
            evaluator = Evaluator(spec.evaluation, model, tokenizer, demo_tasks, device=device)
    calibration = None
    if space_needs_calibration(spec):
        cal = spec.calibration
        with console.status(f"reading calibration data ({cal.source})"):
            ids = calibration_batches(cal, tokenizer)
        console.print(
            f"calibration: {ids.shape[0]} samples x {ids.shape[1]} tokens from {cal.source}, "
            f"{cal.mode} mode"
        )
        cache = CalibrationCache(cal.cache_dir or DEFAULT_CACHE_DIR)
        calibration = Calibration(ids, cal.mode, cache, cal.batch_size)
    return TrialRunner(model, evaluator, tensor_inventory(model), calibration, progress)


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
    storage: str, study: str, devices: list[str], first_index: int = 1, progress: bool = False
) -> list[subprocess.Popen]:
    """Start ``sweep worker`` processes for ``study``, the i-th on ``devices[i]``."""
    procs = []
    for offset, device in enumerate(devices):
        cmd = [
            sys.executable,
            "-m",
            "sweep.cli",
            "worker",
            "--storage",
            storage,
            "--study",
            study,
            "--device",
            device,
            "--index",
            str(first_index + offset),
            "--threads",
            str(cpu_threads(len(devices) + first_index)),
        ]
        if not progress:
            cmd.append("--no-progress")
        procs.append(subprocess.Popen(cmd))
    return procs
