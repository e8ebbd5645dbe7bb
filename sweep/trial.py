"""One trial: restore the base weights, compress by a config, evaluate, score."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sweep.compress import CompressionConfig, compress_model
from sweep.compress.calibration import CalibrationCache
from sweep.compress.driver import CompressionResult
from sweep.compress.layer import requires_calibration
from sweep.compress.rtn import QuantGrid
from sweep.evaluate import Evaluator, Scores, TaskError
from sweep.metrics import (
    Tensor2D,
    real_compression_ratio,
    semantic_retention,
    srcr,
    theoretical_compression_rate,
)
from sweep.model import WeightSnapshot


@dataclass
class Calibration:
    """Calibration token ids, and how the engine uses them (see ``compress_model``)."""

    token_ids: torch.Tensor  # (samples, seq_len)
    mode: str = "cached"
    cache: CalibrationCache | None = None
    batch_size: int = 8


class TrialError(RuntimeError):
    """A trial that produced no usable result (NaN scores, a broken layer...)."""


@dataclass(frozen=True)
class BaseReference:
    """The uncompressed model's scores and each task's random-guess score: Sr's denominator."""

    scores: dict[str, float]
    random_scores: dict[str, float]
    perplexity: float | None = None


@dataclass
class TrialResult:
    """Everything a trial measured, flat enough to store as Optuna user attributes."""

    config: CompressionConfig
    sparsity: float  # measured fraction pruned by the pruning step
    zero_fraction: float
    bits: int
    tcr: float
    real_ratio: float
    sr: float
    srcr: float
    task_scores: dict[str, float]
    perplexity: float | None
    timings: dict[str, float] = field(default_factory=dict)
    grids: dict[str, QuantGrid] = field(default_factory=dict, repr=False)  # not stored

    def objective(self, name: str) -> float:
        return {"srcr": self.srcr, "sr": self.sr, "tcr": self.tcr, "real_ratio": self.real_ratio}[
            name
        ]

    def attrs(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "config_key": self.config.key(),
            "sparsity": self.sparsity,
            "zero_fraction": self.zero_fraction,
            "bits": self.bits,
            "tcr": self.tcr,
            "real_ratio": self.real_ratio,
            "sr": self.sr,
            "srcr": self.srcr,
            "task_scores": self.task_scores,
            "perplexity": self.perplexity,
            "timings": self.timings,
        }


def score_trial(
    config: CompressionConfig,
    sparsity: float,
    zero_fraction: float,
    scores: Scores,
    base: BaseReference,
    inventory: list[Tensor2D],
    timings: dict[str, float],
) -> TrialResult:
    """Turn measured scores into the project's metrics (see ``sweep.metrics``)."""
    bad = {t: v for t, v in scores.tasks.items() if not math.isfinite(v)}
    if bad:
        raise TrialError(f"non-finite task scores: {bad}")
    sr = semantic_retention(scores.tasks, base.scores, base.random_scores)
    return TrialResult(
        config=config,
        sparsity=sparsity,
        zero_fraction=zero_fraction,
        bits=config.bits,
        tcr=theoretical_compression_rate(sparsity, config.bits),
        real_ratio=real_compression_ratio(
            inventory, config.bits, config.group_size, config.symmetric
        ),
        sr=sr,
        srcr=srcr(sr, sparsity, config.bits),
        task_scores=scores.tasks,
        perplexity=scores.perplexity,
        timings=timings,
    )


_16_BIT = (torch.bfloat16, torch.float16)


def storage_dtype(model: nn.Module) -> torch.dtype:
    """The dtype a checkpoint of ``model`` stores its dense weights and scales in: the config's
    dtype when it is a 16-bit one, else bfloat16 (a model loaded in float32 on the CPU reports
    float32 whatever its checkpoint holds)."""
    dtype = getattr(getattr(model, "config", None), "dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.removeprefix("torch."), None)
    return dtype if dtype in _16_BIT else torch.bfloat16


class TrialRunner:
    """Holds the loaded model; runs trials on it, restoring the base weights before each.

    Compressed weights are rounded to ``storage_dtype`` (see ``compress_model``), so a trial
    evaluates the values that the exported 16-bit checkpoint holds.
    """

    def __init__(
        self,
        model: nn.Module,
        evaluator: Evaluator | None,
        inventory: list[Tensor2D],
        calibration: Calibration | None = None,
        progress: bool = True,
    ) -> None:
        self.model = model
        self.evaluator = evaluator
        self.inventory = inventory
        self.calibration = calibration
        self.progress = progress
        self.snapshot = WeightSnapshot(model)
        self.storage_dtype = storage_dtype(model)

    def evaluate_base(self) -> BaseReference:
        """Score the uncompressed model; refuse tasks it cannot do (retention undefined there)."""
        self.snapshot.restore()
        scores = self.evaluator.score()
        random = dict(self.evaluator.random_scores)
        at_chance = {t: s for t, s in scores.tasks.items() if s <= random[t]}
        if at_chance:
            shown = ", ".join(f"{t} {s:.3f} (chance {random[t]:.3f})" for t, s in at_chance.items())
            raise TaskError(
                f"the base model is at or below chance on: {shown}; semantic retention is "
                "undefined there, so drop these tasks from the study"
            )
        return BaseReference(scores.tasks, random, scores.perplexity)

    def compress(self, config: CompressionConfig, record_grids: bool = False) -> CompressionResult:
        """Restore the base weights, then compress the model in place by ``config``."""
        self.snapshot.restore()
        cal = self.calibration
        if requires_calibration(config) and cal is None:
            raise TrialError(f"{config.key()} needs calibration data, and the study has none")
        return compress_model(
            self.model,
            config,
            progress=self.progress,
            calibration=None if cal is None else cal.token_ids,
            mode="cached" if cal is None else cal.mode,
            cache=None if cal is None else cal.cache,
            batch_size=8 if cal is None else cal.batch_size,
            record_grids=record_grids,
            storage_dtype=self.storage_dtype,
        )

    def run(
        self,
        config: CompressionConfig,
        base: BaseReference,
        on_phase: Callable[[str], None] = lambda phase: None,
        record_grids: bool = False,
    ) -> TrialResult:
        """One trial: compress by ``config``, evaluate, score against ``base``. With
        ``record_grids`` the result keeps the quantization grids (for an export)."""
        if self.evaluator is None:
            raise TrialError("this runner was prepared without evaluation")
        timings: dict[str, float] = {}
        start = time.perf_counter()
        on_phase("calibrate + compress" if requires_calibration(config) else "compress")
        result = self.compress(config, record_grids)
        timings["calibration_s"] = result.calibration_s
        timings["compress_s"] = result.seconds - result.calibration_s

        on_phase("evaluate")
        t = time.perf_counter()
        scores = self.evaluator.score()
        timings["evaluate_s"] = time.perf_counter() - t
        timings["total_s"] = time.perf_counter() - start
        scored = score_trial(
            config,
            result.pruned_fraction,
            result.zero_fraction,
            scores,
            base,
            self.inventory,
            timings,
        )
        scored.grids = result.grids
        return scored
