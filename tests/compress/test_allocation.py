import itertools

import pytest
import torch

from sweep.compress.allocation import allocate_bits, owl_sparsities, relative_error


def _weighted_mean(values, sizes):
    return sum(v * n for v, n in zip(values, sizes, strict=True)) / sum(sizes)


def test_owl_keeps_the_mean_sparsity_over_unequal_blocks_and_prunes_outliers_least():
    ratios, sizes = [0.010, 0.002, 0.004, 0.030], [100, 300, 200, 50]
    s = owl_sparsities(ratios, sizes, target=0.7, lam=0.08)
    assert _weighted_mean(s, sizes) == pytest.approx(0.7, abs=1e-12)
    assert max(s) - min(s) == pytest.approx(0.16, abs=1e-12)  # the band is 2 * lambda wide
    assert s.index(min(s)) == ratios.index(max(ratios))  # most outliers: pruned least
    assert s.index(max(s)) == ratios.index(min(ratios))


def test_owl_matches_the_reference_formula_on_equal_blocks():
    # OWL's code: x = (r - min) / (max - min) * 2 * lambda; keep = x - mean(x) + (1 - target)
    ratios, lam, target = [0.5, 1.5, 0.9, 3.0, 2.2], 0.08, 0.6
    lo, hi = min(ratios), max(ratios)
    x = [(r - lo) / (hi - lo) * 2 * lam for r in ratios]
    reference = [1 - (v - sum(x) / len(x) + 1 - target) for v in x]
    got = owl_sparsities(ratios, [7] * len(ratios), target, lam)
    assert got == pytest.approx(reference, abs=1e-12)


def test_owl_narrows_its_band_rather_than_leave_the_unit_interval():
    ratios, sizes = [0.0, 0.0, 0.0, 1.0], [1, 1, 1, 1]
    s = owl_sparsities(ratios, sizes, target=0.1, lam=0.2)
    assert min(s) >= 0.0 and max(s) <= 0.99
    assert _weighted_mean(s, sizes) == pytest.approx(0.1, abs=1e-12)
    assert owl_sparsities([0.3, 0.3], [1, 2], 0.5, 0.1) == [0.5, 0.5]  # no spread: uniform


def test_bit_allocation_is_the_least_error_of_every_allocation_that_meets_the_budget():
    g = torch.Generator().manual_seed(0)
    sizes = {"a": 3, "b": 1, "c": 8, "d": 8, "e": 2}
    errors = {}
    for name in sizes:  # error falls with bits, each layer at its own rate
        e2 = float(torch.rand(1, generator=g)) + 0.1
        errors[name] = {2: e2, 3: e2 / 5, 4: e2 / 22, 8: e2 / 4000}
    total = sum(sizes.values())
    for budget in (2.5, 3, 3.5, 4):
        got = allocate_bits(errors, sizes, budget)
        assert sum(sizes[n] * got[n] for n in sizes) / total <= budget + 1e-12
        best = min(
            sum(errors[n][b] for n, b in zip(sizes, combo, strict=True))
            for combo in itertools.product((2, 3, 4, 8), repeat=len(sizes))
            if sum(sizes[n] * b for n, b in zip(sizes, combo, strict=True)) == budget * total
        )
        assert sum(errors[n][got[n]] for n in sizes) == pytest.approx(best, rel=1e-12)
        assert sum(sizes[n] * got[n] for n in sizes) == budget * total  # the budget, exactly


def test_bit_allocation_refuses_a_budget_below_every_width():
    with pytest.raises(ValueError, match="below the smallest width"):
        allocate_bits({"a": {2: 1.0, 4: 0.1}}, {"a": 10}, 1.5)


def test_relative_error_is_the_output_error_of_rounding_and_falls_with_bits(layer):
    from sweep.compress.rtn import rtn_quantize

    errors = [relative_error(layer.w, layer.hessian, b, 32, False) for b in (2, 3, 4, 8)]
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-3
    rounded = rtn_quantize(layer.w, 3, 32, False)
    direct = (layer.x @ (rounded - layer.w).T).norm() ** 2 / (layer.x @ layer.w.T).norm() ** 2
    assert errors[1] == pytest.approx(float(direct), rel=1e-4)


def test_bit_allocation_of_odd_sizes_stays_within_a_unit_of_the_budget():
    sizes = {f"l{i}": 576 * 1537 + i * 7919 for i in range(6)}  # no useful common divisor
    errors = {n: {2: 1.0, 3: 0.2, 4: 0.05, 8: 0.0} for n in sizes}
    errors["l0"] = {2: 100.0, 3: 50.0, 4: 1.0, 8: 0.0}  # one layer that 3 bits break
    got = allocate_bits(errors, sizes, 3)
    mean = sum(sizes[n] * got[n] for n in sizes) / sum(sizes.values())
    assert abs(mean - 3) < 1e-3 and len(set(got.values())) > 1
