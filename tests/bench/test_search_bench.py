"""The search benchmark's pieces: the hypervolume, the running front, and a replay against a
table (that it runs and what its curve means, not how fast a sampler gets there)."""

from __future__ import annotations

import random

import pytest

from bench.search import add_to_front, bench_spec, hypervolume_2d, replay
from sweep.metrics import theoretical_compression_rate
from sweep.space import all_configs


def test_hypervolume_of_a_staircase():
    assert hypervolume_2d([(2.0, 1.0)]) == pytest.approx(2.0)
    assert hypervolume_2d([(2.0, 1.0), (1.0, 2.0)]) == pytest.approx(3.0)
    assert hypervolume_2d([(2.0, 1.0), (1.0, 2.0), (1.0, 1.0)]) == pytest.approx(3.0)
    assert hypervolume_2d([(2.0, 1.0), (1.0, 2.0)], ref=(0.5, 0.5)) == pytest.approx(1.25)
    assert hypervolume_2d([]) == 0.0


def test_running_front_is_the_non_dominated_set():
    rng = random.Random(0)
    points = [(rng.random(), rng.random()) for _ in range(200)]
    front: list[tuple[float, float]] = []
    for p in points:
        add_to_front(front, p)
    brute = {p for p in points
             if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in points)}  # fmt: skip
    assert set(front) == brute
    assert hypervolume_2d(front) == pytest.approx(hypervolume_2d(points))


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_replay_curve_rises_to_at_most_the_grid_hypervolume(sampler):
    spec = bench_spec("core")
    configs = all_configs(spec.search)
    # A stand-in for measured results: the objectives of every configuration of the core grid.
    tcr = {c.key(): theoretical_compression_rate(c.target_sparsity, c.bits) for c in configs}
    table = {k: (t * (1 + (len(k) % 3) / 10), t) for k, t in tcr.items()}
    full = hypervolume_2d(list(table.values()))
    curve, keys = replay(spec, sampler, 0, table, 30)
    assert len(curve) == len(set(keys)) == 30 and len(keys) >= 30 and set(keys) <= set(table)
    assert all(a <= b for a, b in zip(curve, curve[1:], strict=False))
    assert 0 < curve[-1] <= full + 1e-12


def test_a_replay_asks_until_it_has_enough_new_configurations_or_gives_up():
    spec = bench_spec("core")
    table = {c.key(): (1.0, theoretical_compression_rate(c.target_sparsity, c.bits))
             for c in all_configs(spec.search)}  # fmt: skip
    curve, keys = replay(spec, "random", 0, table, len(table))
    assert len(set(keys)) == len(curve)
    if len(curve) < len(table):  # it gave up: its last 30 asks were configurations seen before
        assert set(keys[-30:]) <= set(keys[:-30])
