"""Staged evaluation: when a trial stops early, and when it earns the full evaluation.

A trial first measures the KL proxy (``sweep.evaluation.proxy``, stored, not decisive) and its
tasks on a fixed sample of documents (``sweep.evaluation.sample``), which gives Sr with an
interval. Its optimistic point is its exact TCr and ratio with Sr at the top of that interval
(and SrCr from it). If a trial of the study that had its full evaluation, and meets the study's
constraints, is at least as good on every objective and better on one, the optimistic point is
dominated: the trial stops (stage SAMPLE), keeping what it measured, and is never drawn on a
front. A sample that grows in steps (racing) asks this after each step, on the documents so far,
its interval narrowing as the sample grows. Otherwise the rest of every task's documents are
scored, which makes Sr exact; the same test is asked again of the exact point, and a trial that
is dominated now stops before the perplexity task (stage TASKS). Perplexity is never an
objective, and a front only grows, so a point dominated once is never on a front: what it skips
is a figure no front, table or export of the study would show. Only a trial that may be on the
front pays for every stage. Optuna's pruners refuse multi-objective studies, so this decision is
the tool's own.

The front a trial is tested against is a snapshot (``Front``), taken when the trial starts. With
one worker it is the front at every decision; with many, a trial finished meanwhile by another
worker is not in it, which can only stop fewer trials, never one that a fresher front keeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from torch import nn

from sweep.compress.config import CompressionConfig
from sweep.evaluation.harness import DocScores, Evaluator, Scores
from sweep.evaluation.measurement import BaseReference, Measurement, Stage
from sweep.evaluation.proxy import BaseDistribution, kl_divergence
from sweep.evaluation.sample import Estimate, estimate, pooled_score
from sweep.metrics import capacity_kept, semantic_retention, srcr


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
    """``m`` at the top of its Sr interval (SrCr with it); an exact one (every document
    scored) as it is."""
    if m.stage != Stage.SAMPLE or m.sr_high is None:
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


@dataclass(frozen=True)
class Front:
    """A study's trials that had their full evaluation and meet its constraints, as their values
    on the study's objectives: what a stopped trial must be dominated by."""

    objectives: tuple[str, ...]
    points: tuple[tuple[float, ...], ...] = ()

    @classmethod
    def of(cls, objectives: Sequence[str], measurements: Iterable[Measurement]) -> Front:
        points = tuple(tuple(float(m.value(o)) for o in objectives) for m in measurements)
        return cls(tuple(objectives), points)

    def dominates(self, m: Measurement) -> bool:
        return dominated_by(tuple(float(m.value(o)) for o in self.objectives), self.points)


@dataclass(frozen=True)
class StopRule:
    """Whether a trial of ``config`` stops where it is (after its sample, or before its
    perplexity): when the deploy runtime refuses it (``judge`` gives its verdict; infeasible,
    it is never on a front), or when its best case (``optimistic``) is dominated by ``front``.
    A configuration that ``search.first`` names is ``never`` stopped."""

    config: CompressionConfig
    front: Front
    judge: Callable[[Measurement], Measurement] = lambda m: m
    never: bool = False

    def __call__(self, estimated: Measurement) -> bool:
        if self.never:
            return False
        estimated = self.judge(estimated)
        if estimated.deployable is False:
            return True
        return self.front.dominates(optimistic(estimated, self.config))


@dataclass(frozen=True)
class StagedScores:
    """What a staged evaluation gives: the scores (estimated, when it stopped after its
    sample; without perplexity, when it stopped before it), the KL proxy, the seconds of its
    stages, where it stopped, and every task's per-document scores so far."""

    scores: Scores
    kl: float
    timings: dict[str, float]
    stage: Stage = Stage.FULL
    sr_low: float | None = None
    sr_high: float | None = None
    documents: dict[str, DocScores] = field(default_factory=dict)

    def into(self, m: Measurement) -> Measurement:
        """``m`` (measured from these scores) with where it stopped, its interval and KL."""
        return replace(m, stage=self.stage, kl=self.kl, sr_low=self.sr_low, sr_high=self.sr_high)


def _merged(into: dict[str, dict[int, float]], more: DocScores) -> None:
    for leaf, docs in more.items():
        into.setdefault(leaf, {}).update(docs)


def evaluate_in_stages(
    evaluator: Evaluator,
    model: nn.Module,
    base: BaseReference,
    proxy: BaseDistribution,
    measured: Callable[[Scores], Measurement],
    stop: StopRule,
    on_phase: Callable[[str], None] = lambda phase: None,
) -> StagedScores:
    """Evaluate ``model`` (compressed, in memory) in stages against ``base``, whose samples
    were drawn (``BaseReference.samples``): the KL proxy, each task's sample (step by step when
    it grows in steps), then the rest of the documents, then perplexity, stopping as soon as
    ``stop`` says so of the measurement ``measured`` makes of the scores so far."""
    stages = evaluator.spec.stages
    samples = base.task_samples()
    assert samples is not None, "the base reference holds no samples: evaluate in full"
    on_phase("stage 0: KL proxy")
    t = time.perf_counter()
    kl = kl_divergence(model, proxy)
    timings = {"kl_s": time.perf_counter() - t}
    scored: dict[str, DocScores] = {task.name: {} for task in evaluator.spec.tasks}
    steps = max(sample.steps for sample in samples.values())
    t = time.perf_counter()
    for k in range(steps):
        on_phase("stage 1: sample" if steps == 1 else f"stage 1: sample, step {k + 1} of {steps}")
        for task in evaluator.spec.tasks:
            sample = samples[task.name]
            new = sample.new_in_step(k)
            if not new:
                continue
            # a leaf whose steps ended earlier scores one of its documents again: lm-eval reads
            # a leaf left out (or an empty list) as "all of its documents"
            wanted = {leaf: new.get(leaf) or s.ids[:1] for leaf, s in sample.leaves.items()}
            _merged(scored[task.name], evaluator.documents(task, wanted)[1])
        estimates = {name: estimate(samples[name].step(k), docs) for name, docs in scored.items()}
        _, low, high = sr_bounds(estimates, base.scores, base.random_scores, stages.z)
        timings["sample_s"] = time.perf_counter() - t
        # returned as it is, or dropped: nothing changes what it holds once it is returned
        estimated = StagedScores(
            Scores(estimated_scores(estimates), None), kl, timings, Stage.SAMPLE, low, high, scored
        )
        if stop(estimated.into(measured(estimated.scores))):  # measure() takes Sr's point
            return estimated
    on_phase("evaluate the rest")
    t = time.perf_counter()
    tasks = {}
    for task in evaluator.spec.tasks:
        sample = samples[task.name]
        if evaluator.is_leaf(task.name):
            complement = sample.complement()
            # lm-eval reads an empty list of documents as "all of them"
            rest = evaluator.documents(task, complement)[1] if complement[task.name] else {}
            tasks[task.name] = pooled_score(sample, scored[task.name], rest)
            _merged(scored[task.name], rest)
        else:  # a group: lm-eval's own aggregate over the whole of it
            group_score, scored[task.name] = evaluator.documents(task)
            tasks[task.name] = (
                group_score if group_score is not None else evaluator.task_score(task)
            )
    timings["rest_s"] = time.perf_counter() - t
    exact = StagedScores(Scores(tasks, None), kl, timings, Stage.TASKS, documents=scored)
    if not evaluator.spec.perplexity_task:
        return replace(exact, stage=Stage.FULL)
    if stop(exact.into(measured(exact.scores))):
        return exact
    on_phase("perplexity")
    t = time.perf_counter()
    ppl = evaluator.perplexity()
    timings["perplexity_s"] = time.perf_counter() - t
    return replace(exact, scores=Scores(tasks, ppl), stage=Stage.FULL)
