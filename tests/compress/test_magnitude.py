import pytest
import torch

from sweep.compress.magnitude import magnitude_prune, nm_mask, topk_mask


@pytest.mark.parametrize("sparsity", [0.1, 0.25, 0.5, 0.7])
def test_unstructured_sparsity_is_exact(sparsity):
    w = torch.randn(64, 96, generator=torch.Generator().manual_seed(0))
    pruned, mask = magnitude_prune(w, sparsity)
    assert int((~mask).sum()) == round(sparsity * w.numel())
    assert int((pruned == 0).sum()) == round(sparsity * w.numel())


def test_magnitude_keeps_the_largest_weights():
    w = torch.randn(32, 64, generator=torch.Generator().manual_seed(1))
    _, mask = magnitude_prune(w, 0.5)
    assert w.abs()[mask].min() >= w.abs()[~mask].max()


@pytest.mark.parametrize(("n", "m"), [(2, 4), (4, 8), (2, 8), (1, 4)])
def test_nm_groups_keep_exactly_n_of_m(n, m):
    w = torch.randn(16, 64, generator=torch.Generator().manual_seed(2))
    pruned, mask = magnitude_prune(w, 0.0, (n, m))
    kept_per_group = mask.view(16, 64 // m, m).sum(-1)
    assert torch.all(kept_per_group == n)
    assert torch.all((pruned != 0).view(16, 64 // m, m).sum(-1) <= n)


def test_nm_refuses_input_size_not_divisible_by_m():
    with pytest.raises(ValueError, match="divisible by 8"):
        nm_mask(torch.randn(4, 12), 2, 8)


def test_zero_sparsity_keeps_everything():
    assert topk_mask(torch.randn(5, 7), 0.0).all()
