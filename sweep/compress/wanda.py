"""Wanda (Sun et al. 2023): prune by |W_ij| * ||X_j||_2, comparing weights within each row."""

from __future__ import annotations

import torch

from sweep.compress.magnitude import nm_mask


def spread(total: int, parts: int) -> torch.Tensor:
    """``total`` split over ``parts`` as evenly as possible (counts differ by at most one)."""
    edges = torch.div(torch.arange(parts + 1) * total, parts, rounding_mode="floor")
    return edges[1:] - edges[:-1]  # (parts,)


def row_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask that drops the lowest scores of each row (rows, cols).

    Exactly ``round(sparsity * numel)`` entries are dropped in all; each row drops the same number
    up to one.
    """
    rows, cols = scores.shape
    n_drop = spread(round(sparsity * scores.numel()), rows).to(scores.device)  # (rows,)
    order = scores.argsort(dim=1, stable=True)  # (rows, cols), lowest first
    rank_kept = torch.arange(cols, device=scores.device) >= n_drop[:, None]  # (rows, cols)
    return torch.empty_like(scores, dtype=torch.bool).scatter_(1, order, rank_kept)


def wanda_scores(weight: torch.Tensor, sq_norms: torch.Tensor) -> torch.Tensor:
    """|W_ij| * sqrt(mean_t x_tj^2): (out, in); the constant sqrt(tokens) is left out."""
    return weight.abs().float() * sq_norms.to(weight.device).float().sqrt()[None, :]


def wanda_prune(
    weight: torch.Tensor,
    sq_norms: torch.Tensor,
    sparsity: float,
    nm: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prune ``weight`` (out, in) by Wanda scores; ``sq_norms`` (in,) from ``accumulate_sq_norms``.

    Unstructured: each output row drops its lowest-scoring weights. N:M: each run of M inputs of
    a row keeps its N best. Returns (pruned weight, keep-mask).
    """
    scores = wanda_scores(weight, sq_norms)  # (out, in)
    mask = row_mask(scores, sparsity) if nm is None else nm_mask(scores, *nm)
    return weight * mask, mask
