import json
from dataclasses import replace

import pytest

from sweep.compress import CompressionConfig
from sweep.evaluation.measurement import Measurement, Stage
from sweep.evaluation.sample import Estimate
from sweep.evaluation.stages import (
    Front,
    StopRule,
    dominated_by,
    dominates,
    optimistic,
    sr_bounds,
)


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
    m = _measurement(Stage.SAMPLE, 0.6, 0.7)
    best = optimistic(m, config)
    assert best.sr == 0.7
    assert best.srcr == pytest.approx(0.7 / (0.5**0.5 * 0.5))
    assert best.tcr == m.tcr
    full = _measurement(Stage.FULL, 0.6, None)
    assert optimistic(full, config) == full


def test_a_front_snapshot_dominates_what_its_points_dominate():
    front = Front.of(["srcr", "tcr"], [_measurement(Stage.FULL, 0.9, None)])
    assert front.points == ((pytest.approx(0.9 / (0.5**0.5 * 0.5)), 0.875),)
    assert front.dominates(_measurement(Stage.FULL, 0.5, None))
    assert not front.dominates(_measurement(Stage.FULL, 0.95, None))
    assert not Front(("srcr", "tcr")).dominates(_measurement(Stage.FULL, 0.1, None))


def test_the_stop_rule_takes_the_best_case_the_runtimes_verdict_and_first_configs():
    config = CompressionConfig(sparsity=0.5, bits=4)
    front = Front.of(["srcr", "tcr"], [_measurement(Stage.FULL, 0.8, None)])
    low = _measurement(Stage.SAMPLE, 0.6, 0.7)  # best case 0.7 < 0.8: dominated
    wide = _measurement(Stage.SAMPLE, 0.6, 0.85)  # best case above the front: goes on
    assert StopRule(config, front)(low)
    assert not StopRule(config, front)(wide)
    assert not StopRule(config, front, never=True)(low)

    def refused(m: Measurement) -> Measurement:
        return replace(m, deployable=False, deploy_reason="not served")

    assert StopRule(config, Front(("srcr", "tcr")), judge=refused)(wide)  # infeasible: stop
    assert not StopRule(config, Front(("srcr", "tcr")), judge=refused, never=True)(wide)


def test_a_stage_is_stored_as_its_name_and_read_back_as_a_stage():
    m = _measurement(Stage.TASKS, 0.6, None)
    stored = json.loads(json.dumps(m.to_dict()))
    assert stored["stage"] == "tasks" and type(stored["stage"]) is str
    back = Measurement.from_dict(stored)
    assert back == m and back.stage is Stage.TASKS and not back.full
    assert Stage.SAMPLE.stopped == "stopped after its sample" and Stage.FULL.stopped == ""
    with pytest.raises(ValueError, match="partial"):
        Measurement.from_dict({**stored, "stage": "partial"})
