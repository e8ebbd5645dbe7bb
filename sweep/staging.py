"""Staged evaluation: when a trial stops early, and when it earns the full evaluation.

A trial first measures the KL proxy (``sweep.proxy``, stored, not decisive) and its tasks on a
fixed sample of documents (``sweep.subsample``), which gives Sr with an interval. Its optimistic
point is its exact TCr and ratio with Sr at the top of that interval (and SrCr from it). If a
trial of the study that had its full evaluation, and meets the study's constraints, is at least
as good on every objective and better on one, the optimistic point is dominated: the trial
stops (stage SAMPLE), keeping what it measured, and is never drawn on a front. Otherwise the rest
of every task's documents are scored, which makes Sr exact; the same test is asked again of the
exact point, and a trial that is dominated now stops before the perplexity task (stage TASKS).
Perplexity is never an objective, and a front only grows, so a point dominated once is never on
a front: what it skips is a figure no front, table or export of the study would show. Only a
trial that may be on the front pays for every stage. Optuna's pruners refuse multi-objective
studies, so this decision is the tool's own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace

from sweep.compress.config import CompressionConfig
from sweep.metrics import capacity_kept, semantic_retention, srcr
from sweep.record import Measurement
from sweep.subsample import Estimate


def sr_bounds(
    estimates: Mapping[str, Estimate],
    base: Mapping[str, float],
    random_scores: Mapping[str, float],
    z: float,
) -> tuple[float, float, float]:
    """Sr's point estimate and its lower and upper bounds, each task taken at ``mean`` and at
    ``mean -/+ z * stderr`` (clipped to [0, 1]). The bound of each task is a ``z``-sigma bound,
    so the bound on their mean is conservative."""

    def sr(scores: dict[str, float]) -> float:
        return semantic_retention(scores, base, random_scores)

    point = sr(estimated_scores(estimates))
    low = sr(estimated_scores(estimates, lambda e: e.lower(z)))
    high = sr(estimated_scores(estimates, lambda e: e.upper(z)))
    return point, low, high


def estimated_scores(
    estimates: Mapping[str, Estimate], at: Callable[[Estimate], float] = lambda e: e.mean
) -> dict[str, float]:
    """Each task's score taken ``at`` a point of its estimate (the mean by default), clipped to
    the scores a task can have, [0, 1]."""
    return {t: min(1.0, max(0.0, at(e))) for t, e in estimates.items()}


def optimistic(m: Measurement, config: CompressionConfig) -> Measurement:
    """``m`` at the top of its Sr interval (SrCr with it); a full measurement as it is."""
    if m.full or m.sr_high is None:
        return m
    capacity = m.capacity or capacity_kept(m.measured_sparsity, config.bits)
    return replace(m, sr=m.sr_high, srcr=srcr(m.sr_high, capacity))


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """``a`` at least as good as ``b`` on every objective (all maximised) and better on one."""
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(
        x > y for x, y in zip(a, b, strict=True)
    )


def dominated_by(point: Sequence[float], front: Iterable[Sequence[float]]) -> bool:
    """Whether any point of ``front`` dominates ``point``."""
    return any(dominates(f, point) for f in front)
