"""Magnitude pruning: keep the weights of largest absolute value."""

from __future__ import annotations

import torch


def drop_lowest(scores: torch.Tensor, n_drop: int) -> torch.Tensor:
    """Mask (True = keep) that drops exactly the ``n_drop`` lowest-scoring entries."""
    mask = torch.ones_like(scores, dtype=torch.bool)
    if n_drop > 0:
        drop = torch.topk(scores.flatten(), n_drop, largest=False).indices
        mask.view(-1)[drop] = False
    return mask


def topk_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Mask (True = keep) that drops exactly ``round(sparsity * numel)`` lowest-scoring entries."""
    return drop_lowest(scores, round(sparsity * scores.numel()))


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Mask keeping the ``n`` highest-scoring of every ``m`` consecutive inputs of each row."""
    rows, cols = scores.shape
    if cols % m:
        raise ValueError(f"an {n}:{m} pattern needs the input size ({cols}) divisible by {m}")
    groups = scores.reshape(rows, cols // m, m)  # (rows, groups, m)
    keep = torch.topk(groups, n, dim=-1).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, keep, True)
    return mask.reshape(rows, cols)


def prune_mask(scores: torch.Tensor, sparsity: float, nm: tuple[int, int] | None) -> torch.Tensor:
    """The keep-mask for ``scores`` (rows, cols) under an unstructured or N:M pattern."""
    return topk_mask(scores, sparsity) if nm is None else nm_mask(scores, *nm)


def magnitude_prune(
    weight: torch.Tensor, sparsity: float, nm: tuple[int, int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prune ``weight`` (out, in) by |w|; returns (pruned weight, keep-mask)."""
    mask = prune_mask(weight.abs().float(), sparsity, nm)
    return weight * mask, mask
