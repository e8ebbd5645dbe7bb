"""One trial: restore the base weights, compress by a config, evaluate, score."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sweep.compress import CompressionConfig, compress_model
from sweep.compress.activations import quantized_activations
from sweep.compress.calibration import CacheCorrupt, Calibration
from sweep.compress.driver import CompressionResult
from sweep.compress.layer import requires_calibration
from sweep.compress.rtn import QuantGrid
from sweep.errors import TrialError
from sweep.evaluation.harness import Evaluator, Scores, TaskError, leaf_lists
from sweep.evaluation.measurement import BaseReference, Measurement, measure, with_agreement
from sweep.evaluation.proxy import BaseDistribution, base_distribution, held_out_tokens
from sweep.evaluation.sample import draw_samples
from sweep.evaluation.stages import StopRule, evaluate_in_stages
from sweep.identity import calibration_fingerprint
from sweep.loaded_model import LoadedModel
from sweep.spec import Fingerprints

__all__ = ["Calibration", "TrialError", "TrialResult", "TrialRunner"]


@dataclass
class TrialResult:
    """One configuration computed: what it measured and, for an export, the grids of its
    quantized layers (kept in memory only)."""

    config: CompressionConfig
    measurement: Measurement
    grids: dict[str, QuantGrid] = field(default_factory=dict, repr=False)


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
        scores, documents = evaluator.score_documents()
        samples = None
        if evaluator.staged():
            drawn = draw_samples(documents, evaluator.spec.stages)
            samples = {task: sample.to_dict() for task, sample in drawn.items()}
        random = dict(evaluator.random_scores)
        at_chance = {t: s for t, s in scores.tasks.items() if s <= random[t]}
        if at_chance:
            shown = ", ".join(f"{t} {s:.3f} (chance {random[t]:.3f})" for t, s in at_chance.items())
            raise TaskError(
                f"the base model is at or below chance on: {shown}; semantic retention is "
                "undefined there, so drop these tasks from the study"
            )
        in_order = {task: leaf_lists(docs) for task, docs in documents.items()}
        return BaseReference(scores.tasks, random, scores.perplexity, samples, in_order)

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
        return compress_model(
            self.loaded.model,
            config,
            progress=self.progress,
            calibration=self.calibration,
            record_grids=record_grids,
            storage_dtype=self.loaded.storage_dtype,
        )

    def run(
        self,
        config: CompressionConfig,
        base: BaseReference,
        on_phase: Callable[[str], None] = lambda phase: None,
        record_grids: bool = False,
        stop: StopRule | None = None,
    ) -> TrialResult:
        """One trial: compress by ``config``, evaluate, score against ``base``. With
        ``record_grids`` the result keeps the quantization grids (for an export).

        With ``stop`` and a base reference that holds samples, the evaluation is staged
        (``sweep.evaluation.stages``): it ends at the first stage where ``stop`` says so.
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
        inventory = self.loaded.inventory

        def measured(scores: Scores) -> Measurement:
            return measure(config, compressed, scores, base, inventory, {})

        t = time.perf_counter()
        staged_scores = None
        # activations quantized as the runtime quantizes them, for every stage
        with quantized_activations(self.loaded.model, config.activations, compressed.input_scales):
            if staged:
                assert proxy is not None and stop is not None
                model = self.loaded.model
                staged_scores = evaluate_in_stages(
                    evaluator, model, base, proxy, measured, stop, on_phase
                )
                scores = staged_scores.scores
                timings.update(staged_scores.timings)
                documents = staged_scores.documents
            else:
                on_phase("evaluate")
                scores, documents = evaluator.score_documents()
        timings["evaluate_s"] = time.perf_counter() - t
        timings["total_s"] = time.perf_counter() - start
        measurement = measure(config, compressed, scores, base, inventory, timings)
        if staged_scores is not None:
            measurement = staged_scores.into(measurement)
        measurement = with_agreement(measurement, documents, base)
        return TrialResult(config, measurement, compressed.grids)
