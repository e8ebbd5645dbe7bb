import pytest

from sweep.compress import CompressionConfig
from sweep.record import Measurement
from sweep.stages import FULL, SAMPLE
from sweep.staging import dominated_by, dominates, optimistic, sr_bounds
from sweep.subsample import Estimate


def test_domination_needs_one_strictly_better_objective():
    assert dominates((2.0, 0.8), (1.0, 0.8))
    assert not dominates((2.0, 0.8), (2.0, 0.8))
    assert not dominates((2.0, 0.7), (1.0, 0.8))
    assert dominated_by((1.0, 0.5), [(0.5, 0.9), (1.5, 0.6)])
    assert not dominated_by((1.0, 0.5), [(0.5, 0.9), (0.9, 0.6)])
    assert not dominated_by((1.0, 0.5), [])


def test_sr_bounds_bracket_the_point_and_widen_with_z():
    base = {"a": 0.9, "b": 0.8}
    random_scores = {"a": 0.25, "b": 0.25}
    est = {"a": Estimate(0.6, 0.05), "b": Estimate(0.7, 0.02)}
    point, low, high = sr_bounds(est, base, random_scores, z=2.0)
    assert low < point < high
    _, low3, high3 = sr_bounds(est, base, random_scores, z=3.0)
    assert low3 < low and high3 > high
    exact = ((0.6 - 0.25) / (0.9 - 0.25) + (0.7 - 0.25) / (0.8 - 0.25)) / 2
    assert point == pytest.approx(exact)


def _measurement(stage: str, sr: float, high: float | None) -> Measurement:
    return Measurement(
        measured_sparsity=0.5, zero_fraction=0.5, tcr=0.875, real_ratio=3.0, sr=sr,
        srcr=sr / (0.5**0.5 * 0.5), perplexity=None, task_scores={}, stage=stage,
        sr_low=None if high is None else sr - 0.1, sr_high=high,
    )  # fmt: skip


def test_optimistic_raises_sr_and_srcr_to_the_top_of_the_interval():
    config = CompressionConfig(sparsity=0.5, bits=4)
    m = _measurement(SAMPLE, 0.6, 0.7)
    best = optimistic(m, config)
    assert best.sr == 0.7
    assert best.srcr == pytest.approx(0.7 / (0.5**0.5 * 0.5))
    assert best.tcr == m.tcr
    full = _measurement(FULL, 0.6, None)
    assert optimistic(full, config) == full
