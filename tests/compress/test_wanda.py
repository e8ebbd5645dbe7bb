import pytest
import torch

from sweep.compress.magnitude import magnitude_prune
from sweep.compress.wanda import spread, wanda_prune


def test_spread_sums_to_the_total_and_differs_by_at_most_one():
    counts = spread(100, 7)
    assert int(counts.sum()) == 100 and int(counts.max() - counts.min()) <= 1


@pytest.mark.parametrize("sparsity", [0.1, 0.3, 0.5, 0.77])
def test_sparsity_is_exact_per_layer_and_even_across_rows(layer, sparsity):
    pruned, keep = wanda_prune(layer.w, layer.sq_norms, sparsity)
    assert int((~keep).sum()) == round(sparsity * layer.w.numel())
    assert torch.all(pruned[~keep] == 0)
    per_row = (~keep).sum(1)
    assert int(per_row.max() - per_row.min()) <= 1


@pytest.mark.parametrize(("n", "m"), [(2, 4), (4, 8), (1, 4)])
def test_nm_groups_keep_exactly_n_of_m(layer, n, m):
    pruned, keep = wanda_prune(layer.w, layer.sq_norms, 0.0, (n, m))
    rows, cols = layer.w.shape
    assert torch.all(keep.view(rows, cols // m, m).sum(-1) == n)
    assert torch.all((pruned != 0).view(rows, cols // m, m).sum(-1) <= n)


def test_each_row_drops_its_lowest_scores(layer):
    _, keep = wanda_prune(layer.w, layer.sq_norms, 0.5)
    scores = layer.w.abs() * layer.sq_norms.sqrt()
    for row in range(layer.w.shape[0]):
        assert scores[row][keep[row]].min() >= scores[row][~keep[row]].max()


@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_output_error_below_magnitude_pruning(layer, nm):
    wanda = layer.error(wanda_prune(layer.w, layer.sq_norms, 0.5, nm)[0])
    magnitude = layer.error(magnitude_prune(layer.w, 0.5, nm)[0])
    assert wanda < 0.8 * magnitude
