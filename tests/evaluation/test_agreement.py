import math
import random

import pytest

from sweep.evaluation.agreement import Z_95, paired_stderr, sr_interval, task_agreement


def _answers(n: int, p: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [float(rng.random() < p) for _ in range(n)]


def test_flips_count_answers_that_traded_places_even_at_equal_accuracy():
    base = [1.0] * 50 + [0.0] * 50
    swapped = [0.0] * 10 + [1.0] * 40 + [1.0] * 10 + [0.0] * 40  # 10 lost, 10 gained
    a = task_agreement({"t": dict(enumerate(swapped))}, {"t": base}, 0.5, 0.5, 0.25)
    assert a.flips == 20 and a.flip_rate == 0.2
    assert a.recovery == 1.0 and a.retention == 1.0
    assert a.retention_low < 1.0 < a.retention_high  # the same score, not a certain one


def test_the_interval_is_the_paired_standard_error_without_finite_population_correction():
    base = _answers(400, 0.8, 0)
    rng = random.Random(1)
    compressed = [b if rng.random() > 0.1 else 1.0 - b for b in base]
    diffs = [c - b for c, b in zip(compressed, base, strict=True)]
    mean = sum(diffs) / 400
    s2 = sum((d - mean) ** 2 for d in diffs) / 399
    every = {"t": dict(enumerate(compressed))}
    assert paired_stderr(every, {"t": base}) == pytest.approx(math.sqrt(s2 / 400))
    score, base_score = sum(compressed) / 400, sum(base) / 400
    a = task_agreement(every, {"t": base}, score, base_score, 0.25)
    n_base = (base_score - 0.25) / 0.75
    margin = Z_95 * math.sqrt(s2 / 400)
    assert a.retention_high == pytest.approx((score + margin - 0.25) / 0.75 / n_base)
    assert a.retention_low == pytest.approx((score - margin - 0.25) / 0.75 / n_base)
    # a sample of 100 of the same documents: the error bar of 100 documents, twice as wide
    first = {"t": {i: compressed[i] for i in range(100)}}
    assert paired_stderr(first, {"t": base}) > 1.5 * paired_stderr(every, {"t": base})


def test_a_model_that_agrees_everywhere_still_has_an_error_bar():
    base = _answers(200, 0.7, 0)
    a = task_agreement({"t": dict(enumerate(base))}, {"t": base}, 0.7, 0.7, 0.25)
    assert a.flips == 0 and a.retention == pytest.approx(1.0)
    assert a.retention_high > 1.0 > a.retention_low  # a variance floored at 1/n


def test_sr_interval_takes_every_task_at_its_bound():
    base = _answers(300, 0.8, 0)
    tasks = {
        name: task_agreement({"t": dict(enumerate(_answers(300, p, 2)))}, {"t": base}, p, 0.8, 0.25)
        for name, p in (("x", 0.7), ("y", 0.6))
    }
    low, high = sr_interval(tasks)
    assert low == pytest.approx((tasks["x"].retention_low + tasks["y"].retention_low) / 2)
    assert low < (tasks["x"].retention + tasks["y"].retention) / 2 < high


def test_a_base_reference_stored_before_per_document_scores_gives_no_agreement():
    from sweep.evaluation.measurement import BaseReference, Measurement, with_agreement

    m = Measurement(measured_sparsity=0.0, zero_fraction=0.0, tcr=0.75, real_ratio=3.5, sr=0.9,
                    srcr=0.9, perplexity=None, task_scores={"t": 0.7})  # fmt: skip
    old = BaseReference({"t": 0.75}, {"t": 0.25})
    assert with_agreement(m, {"t": {"t": {0: 1.0}}}, old) is m
    new = BaseReference({"t": 0.75}, {"t": 0.25}, documents={"t": {"t": [1.0, 0.0, 1.0, 1.0]}})
    kept = with_agreement(m, {"t": {"t": {0: 1.0, 1: 1.0, 2: 0.0, 3: 1.0}}}, new)
    assert kept.flips == 2 and kept.sr_low < kept.sr < kept.sr_high
