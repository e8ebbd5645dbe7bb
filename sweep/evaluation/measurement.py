"""What evaluating one configuration gives, and the reference it is measured against.

- ``BaseReference``: the uncompressed model's scores, the denominator of Sr; one per study.
- ``Measurement``: what computing one configuration gives (``sweep.metrics.METRICS``, task
  scores, timings). It is kept in the results table (``sweep.results``), so that a configuration
  is computed once, and copied into every trial that asked for that configuration.
- ``Stage``: how far a staged evaluation went before it stopped (``sweep.evaluation.stages``).
- ``measure``: the engine's result and the scores, turned into the metrics, each computed once
  through ``sweep.metrics``.

Three sparsities, three names: ``config.sparsity`` is what the configuration asks for (0 for an
N:M pattern), ``config.target_sparsity`` what its pattern means (1 - N/M for N:M), and
``Measurement.measured_sparsity`` the fraction the pruning step removed, which TCr and SrCr use.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum
from typing import Any

from sweep.compress.config import CompressionConfig
from sweep.compress.driver import CompressionResult
from sweep.errors import TrialError
from sweep.evaluation.agreement import TaskAgreement, sr_interval, task_agreement
from sweep.evaluation.harness import DocScores, Scores
from sweep.evaluation.sample import TaskSample
from sweep.metrics import (
    LayerShare,
    Tensor2D,
    capacity_kept,
    layerwise_capacity,
    layerwise_compression_rate,
    real_compression_ratio,
    semantic_retention,
    srcr,
    theoretical_compression_rate,
)


class Stage(StrEnum):
    """The stage a measurement reached; stored as its value."""

    FULL = "full"  # every document of every task, and the perplexity task
    TASKS = "tasks"  # every document of every task (Sr exact), no perplexity: dominated when exact
    SAMPLE = "sample"  # stopped after the sample: task scores estimated, no perplexity

    @property
    def stopped(self) -> str:
        """Where a trial at this stage stopped, in words ("" for the full evaluation)."""
        return {
            Stage.FULL: "",
            Stage.SAMPLE: "stopped after its sample",
            Stage.TASKS: "stopped before its perplexity",
        }[self]


@dataclass(frozen=True)
class BaseReference:
    """The uncompressed model's scores and each task's random-guess score: Sr's denominator."""

    scores: dict[str, float]
    random_scores: dict[str, float]
    perplexity: float | None = None
    # staged evaluation: each task's sample of documents with the base model's scores on them
    # (``TaskSample.to_dict``); None when the study evaluates in full only
    samples: dict[str, dict[str, Any]] | None = None
    # every document's score, per task and leaf, in document order: what a trial's flips and
    # error bars compare with (``sweep.evaluation.agreement``); None in results stored before
    documents: dict[str, dict[str, list[float]]] | None = None

    def task_samples(self) -> dict[str, TaskSample] | None:
        if self.samples is None:
            return None
        return {task: TaskSample.from_dict(data) for task, data in self.samples.items()}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BaseReference:
        return cls(**data)


@dataclass(frozen=True)
class Measurement:
    """Everything computing one configuration measured (see ``sweep.metrics``)."""

    measured_sparsity: float  # fraction removed by the pruning step, over compressible weights
    zero_fraction: float  # fraction of exact zeros in the final compressible weights
    tcr: float
    real_ratio: float
    sr: float
    srcr: float
    perplexity: float | None
    task_scores: dict[str, float]
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase
    # staged evaluation: FULL; SAMPLE when the trial stopped after its sample (then task scores
    # and Sr are estimates, Sr in [sr_low, sr_high], no perplexity); TASKS when it stopped
    # before the perplexity task (Sr exact, no perplexity)
    stage: Stage = Stage.FULL
    kl: float | None = None  # KL proxy: base vs compressed next-token distributions, nats
    sr_low: float | None = None
    sr_high: float | None = None
    capacity: float | None = None  # kappa, SrCr's denominator (absent from older results)
    # a non-uniform config's plan: module name -> [pruned fraction, bits]; None when uniform
    layers: dict[str, list[float]] | None = None
    # what the study's deploy runtime makes of it (``sweep.deployment``); None without one.
    # Judged for each trial by its study's target, never taken from the results table.
    deployable: bool | None = None
    deploy_reason: str | None = None
    deploy_ratio: float | None = None
    # per task, against the base model: flips, recovery, retention and its 95% interval
    # (``sweep.evaluation.agreement.TaskAgreement.to_dict``); None where the base reference
    # holds no per-document scores (results stored before)
    agreement: dict[str, dict[str, float]] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "stage", Stage(self.stage))

    @property
    def layer_summary(self) -> str:
        """The plan in a few words: share of layers per bit-width, range of sparsity."""
        return summarise_layers(self.layers) if self.layers else ""

    def task_agreement(self) -> dict[str, TaskAgreement]:
        return {t: TaskAgreement.from_dict(a) for t, a in (self.agreement or {}).items()}

    @property
    def flips(self) -> int | None:
        """Documents whose answer changed against the base model's, over every task."""
        return sum(a.flips for a in self.task_agreement().values()) if self.agreement else None

    @property
    def full(self) -> bool:
        """Measured on every document: a front point, a table row, an export."""
        return self.stage == Stage.FULL

    def value(self, metric: str) -> float | None:
        """The value of one of ``sweep.metrics.METRICS`` by name."""
        return getattr(self, metric)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stage"] = self.stage.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurement:
        """From ``to_dict``'s output (other keys are ignored); results stored before the measured
        sparsity had its own name hold it as ``sparsity``."""
        data = dict(data)
        if "measured_sparsity" not in data and "sparsity" in data:
            data["measured_sparsity"] = data["sparsity"]
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def summarise_layers(layers: dict[str, list[float]]) -> str:
    """``bits 2:31% 3:44% 4:25%; sparsity 0.41-0.58`` for a plan (name -> [sparsity, bits]).
    Layers count once each (not weighted by size): what varies, and how widely."""
    bits = Counter(int(b) for _, b in layers.values())
    shares = " ".join(f"{b}:{n / len(layers):.0%}" for b, n in sorted(bits.items()))
    sparsities = [s for s, _ in layers.values()]
    lo, hi = min(sparsities), max(sparsities)
    spread = f"{lo:.2f}" if hi - lo < 0.005 else f"{lo:.2f}-{hi:.2f}"
    return f"bits {shares}; sparsity {spread}"


def measure(
    config: CompressionConfig,
    compressed: CompressionResult,
    scores: Scores,
    base: BaseReference,
    inventory: list[Tensor2D],
    timings: dict[str, float],
) -> Measurement:
    """Turn what the engine did and the scores of the compressed model into the project's
    metrics (see ``sweep.metrics``), at stage FULL."""
    bad = {t: v for t, v in scores.tasks.items() if not math.isfinite(v)}
    if bad:
        raise TrialError(f"non-finite task scores: {bad}")
    sparsity = compressed.pruned_fraction
    sr = semantic_retention(scores.tasks, base.scores, base.random_scores)
    if config.non_uniform:
        sizes = {t.name.removesuffix(".weight"): t.rows * t.cols for t in inventory}
        shares = [
            LayerShare(sizes[name], pruned, compressed.bits[name])
            for name, pruned in compressed.layers.items()
        ]
        tcr, capacity = layerwise_compression_rate(shares), layerwise_capacity(shares)
        bits: int | dict[str, int] = {f"{n}.weight": b for n, b in compressed.bits.items()}
        layers = {n: [p, compressed.bits[n]] for n, p in compressed.layers.items()}
    else:
        tcr = theoretical_compression_rate(sparsity, config.bits)
        capacity, bits, layers = capacity_kept(sparsity, config.bits), config.bits, None
    return Measurement(
        measured_sparsity=sparsity,
        zero_fraction=compressed.zero_fraction,
        tcr=tcr,
        real_ratio=real_compression_ratio(
            inventory, bits, config.group_size, config.symmetric, config.format
        ),
        sr=sr,
        srcr=srcr(sr, capacity),
        perplexity=scores.perplexity,
        task_scores=scores.tasks,
        timings=timings,
        capacity=capacity,
        layers=layers,
    )


def with_agreement(
    m: Measurement, documents: dict[str, DocScores], base: BaseReference
) -> Measurement:
    """``m`` with each task's agreement with the base model, from the documents it scored (all
    of them, or a sample's); an exact Sr also gets its 95% interval (a trial stopped after its
    sample keeps the interval its stop was decided on). ``m`` as it is when the base reference
    holds no per-document scores."""
    if base.documents is None:
        return m
    agreements = {
        task: task_agreement(
            documents[task],
            base.documents[task],
            score,
            base.scores[task],
            base.random_scores[task],
        )
        for task, score in m.task_scores.items()
    }
    low, high = (m.sr_low, m.sr_high) if m.stage == Stage.SAMPLE else sr_interval(agreements)
    stored = {task: a.to_dict() for task, a in agreements.items()}
    return replace(m, agreement=stored, sr_low=low, sr_high=high)
