"""One trial: restore the base weights, compress by a config, evaluate, score."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from sweep.compress import CompressionConfig, compress_model
from sweep.compress.calibration import CacheCorrupt, CalibrationCache
from sweep.compress.driver import CompressionResult
from sweep.compress.layer import requires_calibration
from sweep.compress.rtn import QuantGrid
from sweep.evaluate import Evaluator, Scores, TaskError
from sweep.identity import calibration_fingerprint
from sweep.loaded_model import LoadedModel
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
from sweep.proxy import BaseDistribution, base_distribution, held_out_tokens, kl_divergence
from sweep.record import BaseReference, Measurement
from sweep.spec import Fingerprints
from sweep.stages import FULL, SAMPLE, TASKS
from sweep.staging import estimated_scores, sr_bounds
from sweep.subsample import draw_sample, estimate, pooled_score


@dataclass
class Calibration:
    """Calibration token ids, and how the engine uses them (see ``compress_model``)."""

    token_ids: torch.Tensor  # (samples, seq_len)
    mode: str = "cached"
    cache: CalibrationCache | None = None
    batch_size: int = 8


class TrialError(RuntimeError):
    """A trial that produced no usable result (NaN scores, a broken layer...)."""


@dataclass
class TrialResult:
    """One configuration computed: what it measured and, for an export, the grids of its
    quantized layers (kept in memory only)."""

    config: CompressionConfig
    measurement: Measurement
    grids: dict[str, QuantGrid] = field(default_factory=dict, repr=False)


def measure(
    config: CompressionConfig,
    compressed: CompressionResult,
    scores: Scores,
    base: BaseReference,
    inventory: list[Tensor2D],
    timings: dict[str, float],
) -> Measurement:
    """Turn what the engine did and the scores of the compressed model into the project's
    metrics (see ``sweep.metrics``)."""
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
        real_ratio=real_compression_ratio(inventory, bits, config.group_size, config.symmetric),
        sr=sr,
        srcr=srcr(sr, capacity),
        perplexity=scores.perplexity,
        task_scores=scores.tasks,
        timings=timings,
        capacity=capacity,
        layers=layers,
    )


@dataclass
class _StagedOutcome:
    """What a staged evaluation gives: the scores (estimated, when it stopped after its
    sample; without perplexity, when it stopped before it), the KL proxy, the seconds of its
    stages, and where it stopped."""

    scores: Scores
    kl: float
    timings: dict[str, float]
    stage: str = FULL
    sr_low: float | None = None
    sr_high: float | None = None


class TrialRunner:
    """Runs trials on a loaded model: restores its base weights, compresses them by a
    configuration with the study's calibration, evaluates, and measures."""

    def __init__(
        self,
        loaded: LoadedModel,
        evaluator: Evaluator | None,
        calibration: Calibration | None = None,
        progress: bool = True,
    ) -> None:
        self.loaded = loaded
        self.evaluator = evaluator
        self.calibration = calibration
        self.progress = progress
        self.fingerprints = Fingerprints(
            weights=loaded.weights_fingerprint,
            tokenizer=loaded.tokenizer_fingerprint,
            calibration=None
            if calibration is None
            else calibration_fingerprint(calibration.token_ids),
            documents=None if evaluator is None else evaluator.fingerprint(),
            prompts=None if evaluator is None else evaluator.prompts_fingerprint(),
        )  # what the runner's results depend on besides their configurations (sweep.identity)
        self._proxy_base: BaseDistribution | None = None

    def __enter__(self) -> TrialRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the evaluator's temporary task folders."""
        if self.evaluator is not None:
            self.evaluator.close()

    def _evaluator(self) -> Evaluator:
        if self.evaluator is None:
            raise TrialError("this runner was prepared without evaluation")
        return self.evaluator

    def evaluate_base(self) -> BaseReference:
        """Score the uncompressed model; refuse tasks it cannot do (retention undefined there).
        With staged evaluation on, also draw each task's sample of documents."""
        evaluator = self._evaluator()
        self.loaded.restore()
        samples = None
        if evaluator.staged():
            stages = evaluator.spec.stages
            tasks, samples = {}, {}
            for task in evaluator.spec.tasks:
                tasks[task.name], per_doc = evaluator.documents(task)
                sample = draw_sample(per_doc, stages.sample, stages.min_docs, stages.seed)
                samples[task.name] = sample.to_dict()
            ppl = evaluator.perplexity() if evaluator.spec.perplexity_task else None
            scores = Scores(tasks, ppl)
        else:
            scores = evaluator.score()
        random = dict(evaluator.random_scores)
        at_chance = {t: s for t, s in scores.tasks.items() if s <= random[t]}
        if at_chance:
            shown = ", ".join(f"{t} {s:.3f} (chance {random[t]:.3f})" for t, s in at_chance.items())
            raise TaskError(
                f"the base model is at or below chance on: {shown}; semantic retention is "
                "undefined there, so drop these tasks from the study"
            )
        return BaseReference(scores.tasks, random, scores.perplexity, samples)

    def proxy_base(self) -> BaseDistribution:
        """The base model's next-token distributions on the KL proxy's held-out tokens,
        computed on first use (the model then holds its base weights)."""
        if self._proxy_base is None:
            evaluator = self._evaluator()
            stages = evaluator.spec.stages
            texts = evaluator.texts(limit_chars=stages.kl_tokens * 16)
            seq_len = min(stages.kl_seq_len, evaluator.max_length())
            ids = held_out_tokens(texts, self.loaded.tokenizer, stages.kl_tokens, seq_len)
            self.loaded.restore()
            self._proxy_base = base_distribution(self.loaded.model, ids)
        return self._proxy_base

    def compress(self, config: CompressionConfig, record_grids: bool = False) -> CompressionResult:
        """Restore the base weights, then compress the model in place by ``config``. A damaged
        calibration cache entry, found as it is read, is dropped (one line through the cache's
        ``note``) and the compression starts again from the base weights, computing the
        statistics afresh."""
        cal = self.calibration
        if requires_calibration(config) and cal is None:
            raise TrialError(f"{config.key()} needs calibration data, and the study has none")
        try:
            return self._compress(config, record_grids)
        except CacheCorrupt as err:
            assert cal is not None and cal.cache is not None
            cal.cache.drop(err.key)
            cal.cache.note(f"{err}; dropped it, computing its statistics again")
            return self._compress(config, record_grids)

    def _compress(self, config: CompressionConfig, record_grids: bool) -> CompressionResult:
        self.loaded.restore()
        cal = self.calibration
        return compress_model(
            self.loaded.model,
            config,
            progress=self.progress,
            calibration=None if cal is None else cal.token_ids,
            mode="cached" if cal is None else cal.mode,
            cache=None if cal is None else cal.cache,
            batch_size=8 if cal is None else cal.batch_size,
            record_grids=record_grids,
            storage_dtype=self.loaded.storage_dtype,
        )

    def run(
        self,
        config: CompressionConfig,
        base: BaseReference,
        on_phase: Callable[[str], None] = lambda phase: None,
        record_grids: bool = False,
        stop: Callable[[Measurement], bool] | None = None,
    ) -> TrialResult:
        """One trial: compress by ``config``, evaluate, score against ``base``. With
        ``record_grids`` the result keeps the quantization grids (for an export).

        With ``stop`` and a base reference that holds samples, the evaluation is staged: the
        KL proxy, then each task's sample, which gives an estimated measurement (Sr its point
        estimate, in [sr_low, sr_high]); when ``stop`` says so for it, the trial ends there,
        measured at stage SAMPLE. Otherwise the rest of the documents run, which makes Sr
        exact; when ``stop`` says so for the exact measurement, the trial ends at stage TASKS,
        without the perplexity task. Otherwise the perplexity task runs.
        """
        evaluator = self._evaluator()
        staged = stop is not None and base.samples is not None
        proxy = self.proxy_base() if staged else None
        start = time.perf_counter()
        on_phase("calibrate + compress" if requires_calibration(config) else "compress")
        compressed = self.compress(config, record_grids)
        timings = {
            "calibration_s": compressed.calibration_s,
            "compress_s": compressed.seconds - compressed.calibration_s,
        }
        t = time.perf_counter()
        if staged:
            assert proxy is not None and stop is not None
            outcome = self._staged_scores(config, compressed, base, proxy, stop, on_phase)
            scores = outcome.scores
            timings.update(outcome.timings)
        else:
            on_phase("evaluate")
            scores = evaluator.score()
        timings["evaluate_s"] = time.perf_counter() - t
        timings["total_s"] = time.perf_counter() - start
        measurement = measure(config, compressed, scores, base, self.loaded.inventory, timings)
        if staged:
            measurement = replace(
                measurement,
                stage=outcome.stage,
                kl=outcome.kl,
                sr_low=outcome.sr_low,
                sr_high=outcome.sr_high,
            )
        return TrialResult(config, measurement, compressed.grids)

    def _staged_scores(
        self,
        config: CompressionConfig,
        compressed: CompressionResult,
        base: BaseReference,
        proxy: BaseDistribution,
        stop: Callable[[Measurement], bool],
        on_phase: Callable[[str], None],
    ) -> _StagedOutcome:
        evaluator = self._evaluator()
        stages = evaluator.spec.stages
        samples = base.task_samples()
        assert samples is not None
        on_phase("stage 0: KL proxy")
        t = time.perf_counter()
        kl = kl_divergence(self.loaded.model, proxy)
        timings = {"kl_s": time.perf_counter() - t}
        on_phase("stage 1: sample")
        t = time.perf_counter()
        in_sample = {
            task.name: evaluator.documents(task, samples[task.name].indices())[1]
            for task in evaluator.spec.tasks
        }
        estimates = {name: estimate(samples[name], docs) for name, docs in in_sample.items()}
        _, low, high = sr_bounds(estimates, base.scores, base.random_scores, stages.z)
        timings["sample_s"] = time.perf_counter() - t
        estimated = Scores(estimated_scores(estimates), None)  # measure() takes Sr's point
        stopped = replace(
            measure(config, compressed, estimated, base, self.loaded.inventory, {}),
            stage=SAMPLE,
            sr_low=low,
            sr_high=high,
            kl=kl,
        )
        if stop(stopped):
            return _StagedOutcome(estimated, kl, timings, SAMPLE, low, high)
        on_phase("evaluate the rest")
        t = time.perf_counter()
        tasks = {}
        for task in evaluator.spec.tasks:
            sample = samples[task.name]
            if evaluator.is_leaf(task.name):
                complement = sample.complement()
                # lm-eval reads an empty list of documents as "all of them"
                rest = evaluator.documents(task, complement)[1] if complement[task.name] else {}
                tasks[task.name] = pooled_score(sample, in_sample[task.name], rest)
            else:  # a group: lm-eval's own aggregate over the whole of it
                tasks[task.name] = evaluator.task_score(task)
        timings["rest_s"] = time.perf_counter() - t
        if not evaluator.spec.perplexity_task:
            return _StagedOutcome(Scores(tasks, None), kl, timings)
        exact = replace(
            measure(config, compressed, Scores(tasks, None), base, self.loaded.inventory, {}),
            stage=TASKS,
            kl=kl,
        )
        if stop(exact):
            return _StagedOutcome(Scores(tasks, None), kl, timings, TASKS)
        on_phase("perplexity")
        t = time.perf_counter()
        ppl = evaluator.perplexity()
        timings["perplexity_s"] = time.perf_counter() - t
        return _StagedOutcome(Scores(tasks, ppl), kl, timings)
