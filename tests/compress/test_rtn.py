import pytest
import torch

from sweep.compress.rtn import rtn_quantize


def _w(seed=0, rows=16, cols=256):
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group_size", [32, 64, 128, None])
@pytest.mark.parametrize("symmetric", [True, False])
def test_at_most_2_to_the_q_values_per_group(bits, group_size, symmetric):
    q = rtn_quantize(_w(), bits, group_size, symmetric)
    step = q.shape[1] if group_size is None else group_size
    for row in q:
        for start in range(0, q.shape[1], step):
            assert row[start : start + step].unique().numel() <= 2**bits


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_error_shrinks_with_more_bits_and_stays_within_half_a_step(bits):
    w = _w(1)
    q = rtn_quantize(w, bits, 64, symmetric=False)
    step = (w.view(16, 4, 64).amax(-1) - w.view(16, 4, 64).amin(-1).clamp(max=0)) / (2**bits - 1)
    step *= 1 + 2**-7  # the scale is rounded up to bfloat16: at most one bfloat16 ulp larger
    err = (q - w).abs().view(16, 4, 64)
    assert torch.all(err <= step.unsqueeze(-1) / 2 + 1e-6)


def test_mask_keeps_pruned_weights_zero_and_fits_on_the_kept_ones():
    w = _w(2)
    mask = torch.rand(w.shape, generator=torch.Generator().manual_seed(3)) > 0.5
    q = rtn_quantize(w * mask, 3, 128, symmetric=False, mask=mask)
    assert torch.all(q[~mask] == 0)


def test_zero_is_representable():
    w = _w(4)
    w[:, ::3] = 0
    for sym in (True, False):
        q = rtn_quantize(w, 4, 128, sym)
        assert torch.all(q[:, ::3] == 0)
