import math
import random

import pytest

from sweep.evaluation.sample import (
    TaskSample,
    draw_ids,
    draw_sample,
    estimate,
    pooled_score,
    sample_size,
)


def _population(n: int, p: float, seed: int) -> dict[int, float]:
    rng = random.Random(seed)
    return {i: float(rng.random() < p) for i in range(n)}


def test_draws_are_sorted_distinct_and_the_same_everywhere():
    a = draw_ids(1000, 120, seed=3, name="task")
    assert a == sorted(set(a)) and len(a) == 120 and all(0 <= i < 1000 for i in a)
    assert draw_ids(1000, 120, seed=3, name="task") == a
    assert draw_ids(1000, 120, seed=4, name="task") != a
    assert draw_ids(1000, 120, seed=3, name="other") != a


def test_sample_size_takes_the_fraction_or_the_minimum():
    assert sample_size(1000, 0.2, 50) == 200
    assert sample_size(100, 0.2, 50) == 50
    assert sample_size(30, 0.2, 50) == 30


def test_a_sample_counted_in_documents_is_that_many_of_any_task():
    assert sample_size(12_000, 200, 50) == 200  # a leaderboard-sized task: 1.7%, not 20%
    assert sample_size(399, 200, 50) == 200
    assert sample_size(150, 200, 50) == 150  # all of a smaller one
    assert sample_size(1000, 20, 50) == 50  # never under the floor
    base = {"a": _population(3000, 0.8, 0), "b": _population(1000, 0.6, 1)}
    sample = draw_sample(base, sample=200, min_docs=50, seed=0)
    # leaves of a group at the same fraction, 200 documents in all
    assert {k: len(v.ids) for k, v in sample.leaves.items()} == {"a": 150, "b": 50}
    assert draw_sample(base, sample=0.05, min_docs=50, seed=0) == sample  # 200 of 4000
    for n, population in ((100, 176), (200, 302), (150, 596)):  # where n / p * p is not n
        one = {"t": _population(population, 0.7, 2)}
        assert draw_sample(one, sample=n, min_docs=10, seed=0).size == n


def test_a_sample_of_everything_is_exact():
    base = {"t": _population(80, 0.7, 0)}
    sample = draw_sample(base, sample=0.5, min_docs=100, seed=0)
    assert sample.size == 80
    compressed = {"t": _population(80, 0.4, 1)}
    est = estimate(sample, compressed)
    assert est.stderr == 0
    assert est.mean == pytest.approx(sum(compressed["t"].values()) / 80)


def test_sample_and_rest_give_the_exact_pooled_score_over_leaves():
    base = {"a": _population(300, 0.8, 0), "b": _population(100, 0.6, 1)}
    compressed = {"a": _population(300, 0.5, 2), "b": _population(100, 0.3, 3)}
    sample = draw_sample(base, sample=0.2, min_docs=10, seed=0)
    assert {k: len(v.ids) for k, v in sample.leaves.items()} == {"a": 60, "b": 20}
    inside = {k: {i: compressed[k][i] for i in ids} for k, ids in sample.indices().items()}
    rest = {k: {i: compressed[k][i] for i in ids} for k, ids in sample.complement().items()}
    assert all(not set(inside[k]) & set(rest[k]) for k in inside)
    exact = sum(sum(d.values()) for d in compressed.values()) / 400
    assert pooled_score(sample, inside, rest) == pytest.approx(exact)
    assert TaskSample.from_dict(sample.to_dict()) == sample


def test_the_interval_covers_the_full_score_as_often_as_it_claims():
    """Over many compressed models that each flip some of the base model's answers, the
    z = 2.5 interval (about 98.8% two-sided) covers the true full-set score at least 97%."""
    base = {"t": _population(400, 0.85, 0)}
    sample = draw_sample(base, sample=0.2, min_docs=50, seed=0)
    rng = random.Random(1)
    covered = 0
    trials = 400
    for _ in range(trials):
        flip = rng.uniform(0.02, 0.5)
        docs = {i: (1.0 - v if rng.random() < flip else v) for i, v in base["t"].items()}
        truth = sum(docs.values()) / 400
        est = estimate(sample, {"t": docs})
        covered += est.lower(2.5) <= truth <= est.upper(2.5)
    assert covered / trials >= 0.97


def test_pairing_narrows_the_interval_of_a_model_close_to_its_base():
    base = {"t": _population(1000, 0.6, 0)}
    sample = draw_sample(base, sample=0.1, min_docs=50, seed=0)
    rng = random.Random(5)
    close = {i: (1.0 - v if rng.random() < 0.02 else v) for i, v in base["t"].items()}
    est = estimate(sample, {"t": close})
    n = sample.size
    unpaired = math.sqrt(0.6 * 0.4 / n * (1 - n / 1000))
    assert est.stderr < unpaired / 2


def test_a_sample_in_steps_nests_each_step_in_the_next():
    base = {"a": _population(3000, 0.8, 0), "b": _population(1000, 0.6, 1)}
    racing = draw_sample(base, sample=[100, 200, 400], min_docs=50, seed=0)
    assert racing.steps == 3 and racing.step_sizes() == [100, 200, 400]
    for k in range(2):
        for leaf in racing.leaves:
            assert set(racing.step(k).indices()[leaf]) < set(racing.step(k + 1).indices()[leaf])
    # what each step adds, and nothing twice
    added = [racing.new_in_step(k) for k in range(3)]
    for leaf in racing.leaves:
        ids = [i for step in added for i in step[leaf]]
        assert len(ids) == len(set(ids)) == len(racing.leaves[leaf].ids)
    # a step's estimate is that of its documents: the base scores travel with the ids
    one = racing.step(1)
    for leaf, sample in one.leaves.items():
        assert sample.base == [base[leaf][i] for i in sample.ids]
    assert TaskSample.from_dict(racing.to_dict()) == racing
    # the last step alone draws the same documents as one sample of that size
    assert set(draw_sample(base, 400, 50, seed=0).indices()["a"]) == set(racing.indices()["a"])


def test_the_first_step_of_a_race_is_a_simple_random_sample():
    """Each document is in the first step as often as its share says, not the lowest ids."""
    hits = [0] * 100
    for seed in range(400):
        racing = draw_sample({"t": _population(100, 0.5, 0)}, [10, 50], 1, seed)
        for i in racing.step(0).indices()["t"]:
            hits[i] += 1
    assert sum(hits[:50]) == pytest.approx(sum(hits[50:]), rel=0.1)
    assert min(hits) > 15 and max(hits) < 70  # 40 expected of each


def test_steps_past_the_whole_task_end_the_race():
    # a step that would take the whole task is the rest of the evaluation, not a step
    racing = draw_sample({"t": _population(150, 0.5, 0)}, [50, 100, 200, 400], 10, seed=0)
    assert racing.step_sizes() == [50, 100]
    assert racing.new_in_step(2) == {} and len(racing.complement()["t"]) == 50
    assert draw_sample({"t": _population(150, 0.5, 0)}, [100, 200], 10, 0).step_sizes() == [100]
    # one step that takes everything stays one (the full evaluation, scored as a sample)
    assert draw_sample({"t": _population(80, 0.5, 0)}, [100, 200], 50, 0).step_sizes() == [80]
