"""The fidelity benchmark's replay on synthetic records (that it runs and what it counts, not
what it measures on a model)."""

from __future__ import annotations

import random

import pytest

from bench.fidelity import bench_spec, exact_stage1, grid_front, replay
from sweep.evaluation.measurement import Measurement, Stage
from sweep.metrics import capacity_kept, srcr, theoretical_compression_rate
from sweep.space import all_configs


def _records(width: float) -> dict[str, dict]:
    """Every configuration of the demo grid with a made-up Sr; the stage-1 interval is
    ``width`` either side of the full Sr (so it always holds it)."""
    rng = random.Random(0)
    out = {}
    for c in sorted(all_configs(bench_spec("demo").search), key=lambda c: c.key()):
        sparsity = c.target_sparsity
        sr = max(0.05, 1 - sparsity * rng.uniform(0.3, 1.2) - (16 - c.bits) * rng.uniform(0, 0.04))
        m = Measurement(
            measured_sparsity=sparsity, zero_fraction=sparsity,
            tcr=theoretical_compression_rate(sparsity, c.bits), real_ratio=1.0, sr=sr,
            srcr=srcr(sr, capacity_kept(sparsity, c.bits)), perplexity=10.0, task_scores={},
            stage=Stage.FULL, kl=0.1,
        )  # fmt: skip
        est = Measurement(**{**m.to_dict(), "stage": Stage.SAMPLE, "perplexity": None,
                             "sr_low": sr - width, "sr_high": sr + width})  # fmt: skip
        out[c.key()] = {
            "config": c.to_dict(), "full": m.to_dict(), "estimated": est.to_dict(),
            "eval_full_s": 10.0, "eval_stage1_s": 2.5, "eval_tasks_s": 5.0,
            "eval_staged_full_s": 10.5,
        }  # fmt: skip
    return out


def test_staged_replay_stops_dominated_configurations_and_never_a_front_one():
    spec = bench_spec("demo")
    records = _records(width=0.02)
    front = set(grid_front(records, list(spec.objectives)))
    assert 0 < len(front) < len(records)
    full = replay(spec, records, staged=False, seed=0, n=30)
    staged = replay(spec, records, staged=True, seed=0, n=30)
    # TPE may stall a little short of 30 new configurations (REPEAT_LIMIT repeats in a row);
    # how soon differs by a tie between machines, so only "most of them" is asserted
    assert 20 <= full["distinct"] <= 30 and 20 <= staged["distinct"] <= 30
    assert full["stopped"] == full["before_ppl"] == [] and full["eval_s"] == 10.0
    assert staged["stopped"] and not set(staged["stopped"]) & front
    # exact points a front dominates skip the perplexity: never a grid front point
    assert staged["before_ppl"] and not set(staged["before_ppl"]) & front
    assert not set(staged["stopped"]) & set(staged["before_ppl"])
    stopped, before = len(staged["stopped"]), len(staged["before_ppl"])
    distinct = staged["distinct"]
    expected = (stopped * 2.5 + before * 5.0 + (distinct - stopped - before) * 10.5) / distinct
    assert staged["eval_s"] == pytest.approx(expected)


def test_a_wider_interval_stops_fewer_trials():
    spec = bench_spec("demo")
    narrow = replay(spec, _records(width=0.0), staged=True, seed=1, n=40)
    wide = replay(spec, _records(width=0.6), staged=True, seed=1, n=40)
    assert len(wide["stopped"]) < len(narrow["stopped"])


def test_an_exact_stage_one_stops_every_trial_the_front_dominates_and_no_other():
    spec = bench_spec("demo")
    records = _records(width=0.3)
    exact = exact_stage1(records)
    for key, r in exact.items():
        e, f = r["estimated"], r["full"]
        assert e["sr_low"] == e["sr"] == e["sr_high"] == f["sr"] and e["srcr"] == f["srcr"]
        assert r["full"] == records[key]["full"] and e["stage"] == Stage.SAMPLE
    bound = replay(spec, exact, staged=True, seed=2, n=30)
    # with no uncertainty left, nothing is left for the perplexity stop to catch
    assert bound["stopped"] and bound["before_ppl"] == []


def test_a_grid_holds_the_grid_whose_records_it_reuses():
    from bench.fidelity import PART_OF

    for grid, inner in PART_OF.items():
        outer_keys = {c.key() for c in all_configs(bench_spec(grid).search)}
        inner_keys = {c.key() for c in all_configs(bench_spec(inner).search)}
        assert inner_keys < outer_keys
        assert bench_spec(grid).sampler.name == bench_spec(inner).sampler.name == "tpe"


def _document_records(population: int = 1000) -> dict:
    """Per-document records of the SmolLM2 next-word grid, made up: each configuration turns a
    share of the base model's answers (more as it compresses more) right or wrong at random."""
    rng = random.Random(0)
    base = [float(rng.random() < 0.85) for _ in range(population)]
    base_score = sum(base) / population
    data = {
        "base": {"tasks": {"t": base_score}, "random": {"t": 0.25}, "documents": {"t": {"t": base}},
                 "eval_s": 100.0, "call_s": 1.0},
        "records": {},
    }  # fmt: skip
    for c in all_configs(bench_spec("smollm2-nextword").search):
        damage = min(0.9, c.target_sparsity**2 + {2: 0.8, 3: 0.3, 4: 0.08, 8: 0.01}[c.bits])
        docs = [b if rng.random() > damage else float(rng.random() < 0.25) for b in base]
        score = sum(docs) / population
        sr = max(0.0, (score - 0.25) / 0.75) / ((base_score - 0.25) / 0.75)
        capacity = capacity_kept(c.target_sparsity, c.bits)
        m = Measurement(
            measured_sparsity=c.target_sparsity, zero_fraction=c.target_sparsity,
            tcr=theoretical_compression_rate(c.target_sparsity, c.bits), real_ratio=1.0, sr=sr,
            srcr=srcr(sr, capacity), perplexity=None, task_scores={"t": score}, kl=damage,
            capacity=capacity,
        )  # fmt: skip
        data["records"][c.key()] = {"config": c.to_dict(), "full": m.to_dict(),
                                    "documents": {"t": {"t": docs}}, "kl_s": 2.0,
                                    "eval_s": 101.0}  # fmt: skip
    return data


def test_racing_replay_costs_what_its_steps_score_and_never_stops_a_front_point():
    from bench.racing import FULL, Rule, bench_rules, schedules

    spec = bench_spec("smollm2-nextword")
    data = _document_records()
    rules = [Rule(FULL), Rule("one", [200]), Rule("racing", [50, 100, 200]),
             Rule("exact", [50], exact=True)]  # fmt: skip
    rows = {r["mode"]: r for r in bench_rules("g", data, spec, rules, seeds=2)}
    assert rows[FULL]["eval_s"] == 101.0 and rows[FULL]["saving"] == 1.0
    for mode in ("one", "racing", "exact"):
        assert rows[mode]["front_points_stopped"] == 0 and rows[mode]["stopped_share"] > 0
        assert rows[mode]["saving"] > 1.0
        assert rows[mode]["task_documents"] == 1000
    assert rows["racing"]["interval_held"] >= 0.9
    # stopping after 50 documents costs the KL pass, one lm-eval call and 50 documents
    per_doc = (101.0 - 1.0) / 1000
    plan = next(iter(schedules(data, rules[2], spec).values()))
    assert [s.seconds for s in plan.steps] == pytest.approx(
        [2.0 + 1.0 + 50 * per_doc, 2.0 + 2.0 + 100 * per_doc, 2.0 + 3.0 + 200 * per_doc]
    )
    assert plan.full_seconds == pytest.approx(2.0 + 4.0 + 1000 * per_doc)
    # the interval narrows as the sample grows
    widths = [s.sr_high - s.sr_low for s in plan.steps]
    assert widths == sorted(widths, reverse=True)
