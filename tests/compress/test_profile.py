"""Non-uniform configurations through the engine: the plan, what it keeps, and what it stores."""

import math

import pytest
import torch

from sweep.compress.calibration import Calibration, CalibrationCache, calibration_key
from sweep.compress.config import CompressionConfig
from sweep.compress.driver import compress_model, compressible_linears
from sweep.compress.profile import LayerProfile
from sweep.evaluation.harness import Scores
from sweep.evaluation.measurement import BaseReference, measure
from sweep.metrics import FULL_BITS, packed_linear_bytes
from sweep.model import WeightSnapshot, tensor_inventory
from tests.compress.test_driver import ForwardCounter, tiny_llama

OWL = CompressionConfig(
    sparsity=0.6, prune_method="wanda", profile="owl", owl_m=2.0, owl_lambda=0.1
)
MIXED = CompressionConfig(bits=3, quant_method="gptq", group_size=32, allocation="mixed")
BASE = BaseReference({"t": 0.8}, {"t": 0.25})


@pytest.fixture(scope="module")
def calibration():
    return torch.randint(0, 96, (6, 24), generator=torch.Generator().manual_seed(1))


def _sizes(model):
    return {n: layer.weight.numel() for n, layer in compressible_linears(model).items()}


def test_owl_keeps_the_mean_sparsity_and_its_trial_counts_each_layer(calibration):
    model = tiny_llama()
    inventory = tensor_inventory(model)
    result = compress_model(model, OWL, False, calibration=Calibration(calibration))
    sizes = _sizes(model)
    assert len({round(p, 3) for p in result.layers.values()}) == 2  # one sparsity per block
    mean = sum(sizes[n] * p for n, p in result.layers.items()) / sum(sizes.values())
    assert mean == pytest.approx(0.6, abs=1e-3)  # up to rounding each layer's count
    zeros = {n: int((layer.weight == 0).sum()) / layer.weight.numel()
             for n, layer in compressible_linears(model).items()}  # fmt: skip
    assert zeros == pytest.approx(result.layers)

    m = measure(OWL, result, Scores({"t": 0.6}, None), BASE, inventory, {})
    kept = sum(sizes[n] * (1 - zeros[n]) for n in sizes)  # by hand, from the weights
    assert m.tcr == pytest.approx(1 - kept / sum(sizes.values()), abs=1e-12)
    capacity = sum(sizes[n] * math.sqrt(1 - zeros[n]) for n in sizes) / sum(sizes.values())
    assert m.capacity == pytest.approx(capacity, abs=1e-12)
    assert m.srcr == pytest.approx(m.sr / capacity)
    assert m.layers is not None and set(m.layers) == set(sizes)


def test_mixed_bits_meet_the_budget_and_their_ratio_counts_each_layer(calibration):
    # a random model's layers all round alike: every layer gets 3 bits here (the demo model's
    # do not: tests/export/test_checkpoint.py)
    model = tiny_llama()
    inventory = tensor_inventory(model)
    result = compress_model(
        model, MIXED, False, calibration=Calibration(calibration), record_grids=True
    )
    sizes = _sizes(model)
    assert {g.bits for g in result.grids.values()} <= {2, 3, 4, 8}
    assert {n: g.bits for n, g in result.grids.items()} == result.bits
    assert sum(sizes[n] * b for n, b in result.bits.items()) == 3 * sum(sizes.values())

    m = measure(MIXED, result, Scores({"t": 0.6}, None), BASE, inventory, {})
    weights = sum(sizes.values())
    assert m.tcr == pytest.approx(1 - 3 * weights / (FULL_BITS * weights), abs=1e-12)
    dense = sum(t.rows * t.cols * 2 for t in inventory)
    written = sum(t.rows * t.cols * 2 for t in inventory if not t.compressible)
    for name, layer in compressible_linears(model).items():
        rows, cols = layer.weight.shape
        bits = result.bits[name]
        codes = rows * math.ceil(cols * bits / 32) * 4
        groups = math.ceil(cols / 32)
        written += codes + rows * groups * 2 + math.ceil(rows * bits / 32) * groups * 4 + 16
        assert packed_linear_bytes(rows, cols, bits, 32, False) == codes + rows * groups * 2 + (
            math.ceil(rows * bits / 32) * groups * 4 + 16
        )
    assert m.real_ratio == pytest.approx(dense / written, rel=1e-12)


def test_the_profile_is_measured_once_and_kept_beside_the_cache(calibration, tmp_path):
    model = tiny_llama()
    snapshot = WeightSnapshot(model)
    key = calibration_key(model, calibration)
    cache = CalibrationCache(tmp_path)
    first = compress_model(model, MIXED, False, calibration=Calibration(calibration, cache=cache))
    stored = cache.read_profile(key)
    assert stored is not None and "g32-asym" in LayerProfile.from_dict(stored).errors
    first_weights = {n: w.weight.clone() for n, w in compressible_linears(model).items()}

    snapshot.restore()
    counter = ForwardCounter(model)
    again = compress_model(model, MIXED, False, calibration=Calibration(
        calibration, cache=CalibrationCache(tmp_path)))  # fmt: skip
    assert counter.calls == 0 and again.stats_from_cache and again.bits == first.bits
    assert all(torch.equal(first_weights[n], w.weight) for n, w in
               compressible_linears(model).items())  # fmt: skip

    snapshot.restore()  # without a cache: measured for this call, the same plan
    alone = compress_model(model, MIXED, False, calibration=Calibration(calibration))
    assert alone.bits == first.bits


def test_a_grouped_allocation_gives_each_fused_group_one_width_at_the_least_error():
    import itertools

    from sweep.compress.profile import allocate_grouped

    gen = torch.Generator().manual_seed(3)
    names = [f"l{i}" for i in range(7)]
    drawn = torch.randint(1, 5, (7,), generator=gen) * 64
    sizes = {n: int(s) for n, s in zip(names, drawn, strict=True)}
    errors = {n: {b: float(torch.rand(1, generator=gen)) / b**2 for b in (2, 3, 4, 8)}
              for n in names}  # fmt: skip
    fused = [["l0", "l1", "l2"], ["l4", "l5"]]
    units = [fused[0], ["l3"], fused[1], ["l6"]]
    budget = 3.5
    got = allocate_grouped(errors, sizes, budget, fused)
    for group in fused:
        assert len({got[n] for n in group}) == 1
    total = sum(sizes.values())
    assert sum(sizes[n] * got[n] for n in names) <= budget * total

    def error(widths):
        return sum(errors[n][widths[n]] for n in names)

    best = math.inf  # every assignment of one width per unit that meets the budget
    for choice in itertools.product((2, 3, 4, 8), repeat=len(units)):
        widths = {n: b for unit, b in zip(units, choice, strict=True) for n in unit}
        if sum(sizes[n] * widths[n] for n in names) <= budget * total:
            best = min(best, error(widths))
    assert error(got) == pytest.approx(best)


def test_a_mixed_plan_of_the_demo_splits_none_of_its_fused_groups():
    from sweep.calibration_data import calibration_batches
    from sweep.compress.fused import fused_groups
    from sweep.demo import CALIBRATION_FILE, MODEL_DIR
    from sweep.model import load_model
    from sweep.spec import CalibrationSpec

    model, tokenizer = load_model(MODEL_DIR, dtype="auto", device="cpu")
    groups = fused_groups(model)
    spec = CalibrationSpec(path=CALIBRATION_FILE, samples=16, seq_len=64)
    tokens = calibration_batches(spec, tokenizer)
    config = CompressionConfig(bits=3, quant_method="gptq", group_size=128, allocation="mixed")
    result = compress_model(model, config, False, calibration=Calibration(tokens))
    assert len(set(result.bits.values())) >= 2  # widths differ across groups
    assert all(len({result.bits[n] for n in g}) == 1 for g in groups)
    sizes = _sizes(model)
    assert sum(sizes[n] * b for n, b in result.bits.items()) == 3 * sum(sizes.values())
