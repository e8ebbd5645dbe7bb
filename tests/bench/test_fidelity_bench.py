"""The fidelity benchmark's replay on synthetic per-document records (that it runs and what it
counts, not what it measures on a model)."""

from __future__ import annotations

import random

import pytest

from bench.fidelity import RECORDS, bench_spec
from bench.racing import FULL, Rule, bench_rules, schedules
from sweep.evaluation.measurement import Measurement
from sweep.metrics import capacity_kept, srcr, theoretical_compression_rate
from sweep.space import all_configs
from sweep.spec import StudySpec

DAMAGE = {2: 0.8, 3: 0.3, 4: 0.08, 8: 0.01, 16: 0.0}  # share of answers redrawn, by bits


def _nextword_spec() -> StudySpec:
    """The next-word grid's study on 16 configurations (4 sparsities x 4 bits), whatever its
    file searches: replays of a larger grid count the same things, only slower."""
    spec = bench_spec("smollm2-nextword")
    small = {"patterns": ["unstructured"], "bits": [2, 3, 4, 8], "orders": ["prune_first"]}
    return spec.model_copy(update={"search": spec.search.model_copy(update=small)})


def _document_records(spec: StudySpec, population: int = 1000, ppl_s: float = 0.0) -> dict:
    """Per-document records of ``spec``'s grid, made up: each configuration redraws a share of
    the base model's answers at random (more as it compresses more); ``ppl_s`` of perplexity."""
    rng = random.Random(0)
    base = [float(rng.random() < 0.85) for _ in range(population)]
    base_score = sum(base) / population
    data = {
        "base": {"tasks": {"t": base_score}, "random": {"t": 0.25}, "documents": {"t": {"t": base}},
                 "eval_s": 100.0, "call_s": 1.0},
        "records": {},
    }  # fmt: skip
    for c in all_configs(spec.search):
        damage = min(0.9, c.target_sparsity**2 + DAMAGE[c.bits])
        docs = [b if rng.random() > damage else float(rng.random() < 0.25) for b in base]
        score = sum(docs) / population
        sr = max(0.0, (score - 0.25) / 0.75) / ((base_score - 0.25) / 0.75)
        capacity = capacity_kept(c.target_sparsity, c.bits)
        m = Measurement(
            measured_sparsity=c.target_sparsity, zero_fraction=c.target_sparsity,
            tcr=theoretical_compression_rate(c.target_sparsity, c.bits), real_ratio=1.0, sr=sr,
            srcr=srcr(sr, capacity), perplexity=10.0 + damage if ppl_s else None,
            task_scores={"t": score}, kl=damage, capacity=capacity,
        )  # fmt: skip
        data["records"][c.key()] = {"config": c.to_dict(), "full": m.to_dict(),
                                    "documents": {"t": {"t": docs}}, "kl_s": 2.0,
                                    "eval_s": 101.0, "perplexity_s": ppl_s}  # fmt: skip
    return data


def test_racing_replay_costs_what_its_steps_score_and_never_stops_a_front_point():
    spec = _nextword_spec()
    data = _document_records(spec)
    rules = [Rule(FULL), Rule("one", [200]), Rule("racing", [50, 100, 200]),
             Rule("exact", [50], exact=True)]  # fmt: skip
    rows = {r["mode"]: r for r in bench_rules("g", data, spec, rules, seeds=2)}
    assert rows[FULL]["eval_s"] == 101.0 and rows[FULL]["saving"] == 1.0
    for mode in ("one", "racing", "exact"):
        assert rows[mode]["front_points_stopped"] == 0 and rows[mode]["stopped_share"] > 0
        assert rows[mode]["saving"] > 1.0
        assert rows[mode]["task_documents"] == 1000
    assert rows["exact"]["stopped_share"] >= rows["racing"]["stopped_share"]
    assert rows["racing"]["interval_held"] >= 0.9
    # stopping after 50 documents costs the KL pass, one lm-eval call and 50 documents
    per_doc = (101.0 - 1.0) / 1000
    plan = next(iter(schedules(data, rules[2], spec).values()))
    assert [s.seconds for s in plan.steps] == pytest.approx(
        [2.0 + 1.0 + 50 * per_doc, 2.0 + 2.0 + 100 * per_doc, 2.0 + 3.0 + 200 * per_doc]
    )
    assert plan.full_seconds == pytest.approx(2.0 + 4.0 + 1000 * per_doc)
    assert plan.tasks_seconds is None  # no perplexity task: nothing to stop before
    # the interval narrows as the sample grows
    widths = [s.sr_high - s.sr_low for s in plan.steps]
    assert widths == sorted(widths, reverse=True)


def test_a_wider_interval_stops_fewer_trials():
    spec = _nextword_spec()
    data = _document_records(spec)

    def stopped(z: float) -> float:
        stages = spec.evaluation.stages.model_copy(update={"z": z})
        wide = spec.model_copy(
            update={"evaluation": spec.evaluation.model_copy(update={"stages": stages})}
        )
        _, row = bench_rules("g", data, wide, [Rule(FULL), Rule("one", [100])], seeds=2)
        return row["stopped_share"]

    assert stopped(8.0) < stopped(1.0)
    rules = [Rule(FULL), Rule("wide", [100], z=8.0), Rule("narrow", [100], z=1.0)]
    _, wide_rule, narrow_rule = bench_rules("g", data, spec, rules, seeds=2)
    assert (wide_rule["z"], narrow_rule["z"]) == (8.0, 1.0)
    assert wide_rule["stopped_share"] == stopped(8.0) < narrow_rule["stopped_share"]


def test_a_trial_dominated_once_exact_stops_before_its_perplexity():
    spec = bench_spec("smollm2")  # realtext_cloze and a perplexity task
    assert spec.evaluation.perplexity_task
    data = _document_records(spec, ppl_s=50.0)
    rules = [Rule(FULL), Rule("one", [100])]
    full, staged = bench_rules("g", data, spec, rules, seeds=3)
    assert full["eval_s"] == 151.0  # tasks and perplexity
    assert staged["before_ppl_share"] > 0 and staged["front_points_stopped"] == 0
    plan = next(iter(schedules(data, rules[1], spec).values()))
    assert plan.full_seconds == pytest.approx(plan.tasks_seconds + 50.0)


def test_grids_of_one_study_share_their_records():
    assert RECORDS["smollm2-search"] == RECORDS["smollm2"]
    outer = {c.key() for c in all_configs(bench_spec("smollm2-search").search)}
    inner = {c.key() for c in all_configs(bench_spec("smollm2").search)}
    assert inner < outer
