import pytest
import torch

from sweep.compress.magnitude import magnitude_prune
from sweep.compress.rtn import QuantSpec
from sweep.compress.sparsegpt import sparsegpt_prune
from sweep.compress.wanda import wanda_prune


@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.7])
def test_unstructured_sparsity_is_exact(layer, sparsity):
    pruned, keep = sparsegpt_prune(layer.w, layer.hessian, sparsity, block_size=48)
    assert int((~keep).sum()) == round(sparsity * layer.w.numel())
    assert torch.all(pruned[~keep] == 0)
    assert pruned.dtype == layer.w.dtype and pruned.shape == layer.w.shape


@pytest.mark.parametrize(("n", "m"), [(2, 4), (4, 8), (2, 8)])
def test_nm_groups_keep_at_most_n_of_m(layer, n, m):
    pruned, keep = sparsegpt_prune(layer.w, layer.hessian, 0.0, (n, m))
    rows, cols = layer.w.shape
    assert torch.all(keep.view(rows, cols // m, m).sum(-1) == n)
    assert torch.all((pruned != 0).view(rows, cols // m, m).sum(-1) <= n)


def test_nm_refuses_input_size_not_divisible_by_m():
    with pytest.raises(ValueError, match="divisible by 8"):
        sparsegpt_prune(torch.randn(4, 12), torch.eye(12), 0.0, (2, 8))


@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_output_error_below_magnitude_and_wanda(layer, nm):
    sparsegpt = layer.error(sparsegpt_prune(layer.w, layer.hessian, 0.5, nm)[0])
    magnitude = layer.error(magnitude_prune(layer.w, 0.5, nm)[0])
    wanda = layer.error(wanda_prune(layer.w, layer.sq_norms, 0.5, nm)[0])
    assert sparsegpt < 0.6 * magnitude
    assert sparsegpt < wanda


@pytest.mark.parametrize("group_size", [32, None])
@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_joint_pass_prunes_exactly_and_quantizes_on_a_grid(layer, group_size, nm):
    bits = 3
    out, keep = sparsegpt_prune(layer.w, layer.hessian, 0.4, nm, QuantSpec(bits, group_size))
    target = 0.4 if nm is None else 0.5
    assert int((~keep).sum()) == round(target * layer.w.numel())
    assert torch.all(out[~keep] == 0)
    step = out.shape[1] if group_size is None else group_size
    for start in range(0, out.shape[1], step):
        for row in out[:, start : start + step]:
            assert row.unique().numel() <= 2**bits


def test_joint_pass_beats_pruning_then_rounding(layer):
    from sweep.compress.rtn import rtn_quantize

    joint = layer.error(sparsegpt_prune(layer.w, layer.hessian, 0.5, None, QuantSpec(3, 32))[0])
    pruned, keep = sparsegpt_prune(layer.w, layer.hessian, 0.5)
    two_step = layer.error(rtn_quantize(pruned, 3, 32, False, keep))
    assert joint < two_step
