"""The project's metrics, defined once: TCr, real compression ratio, Sr and SrCr.

Definitions (see README, "How the metrics are defined"):

- ``TCr(s, q) = 1 - (1 - s) * q / 16``: the paper's theoretical compression rate, with ``s`` the
  pruned fraction of the compressible weights and ``q`` the bit-width (16 = not quantized).
- ``n_t = (a_t - r_t) / (1 - r_t)``: a task score normalised so that random guessing is 0 and a
  perfect score is 1.
- ``Sr = mean_t max(0, n_t(compressed)) / n_t(base)``: semantic retention.
- ``SrCr = Sr / kappa(s, q)`` with ``kappa(s, q) = sqrt(1 - s) * log2(q) / log2(16)``.

SrCr is this project's reading of the paper's metric, whose exact constants are not published.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

FULL_BITS = 16


def _check_sparsity_and_bits(sparsity: float, bits: int) -> None:
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if not 1 <= bits <= FULL_BITS:
        raise ValueError(f"bits must be in [1, {FULL_BITS}], got {bits}")


def theoretical_compression_rate(sparsity: float, bits: int) -> float:
    """TCr = 1 - (1 - s) * q / 16: the fraction of 16-bit storage saved, ignoring all overheads."""
    _check_sparsity_and_bits(sparsity, bits)
    return 1.0 - (1.0 - sparsity) * bits / FULL_BITS


def capacity_kept(sparsity: float, bits: int) -> float:
    """kappa(s, q) = sqrt(1 - s) * log2(q) / log2(16); equals 1 for the uncompressed model."""
    _check_sparsity_and_bits(sparsity, bits)
    if bits < 2:
        raise ValueError("kappa needs bits >= 2 (log2(1) = 0)")
    return math.sqrt(1.0 - sparsity) * math.log2(bits) / math.log2(FULL_BITS)


def normalised_score(score: float, random_score: float) -> float:
    """n_t = (a_t - r_t) / (1 - r_t); 0 at chance, 1 when perfect, negative below chance."""
    if not 0.0 <= random_score < 1.0:
        raise ValueError(f"random-guess score must be in [0, 1), got {random_score}")
    return (score - random_score) / (1.0 - random_score)


def semantic_retention(
    compressed: Mapping[str, float],
    base: Mapping[str, float],
    random_scores: Mapping[str, float],
) -> float:
    """Sr: mean over tasks of max(0, n_t(compressed)) / n_t(base).

    Every task of ``base`` must be in ``compressed`` and ``random_scores``; a task whose base model
    is at or below chance carries no information about retention and is refused.
    """
    if not base:
        raise ValueError("semantic retention needs at least one task")
    ratios = []
    for task, base_score in base.items():
        if task not in compressed:
            raise KeyError(f"no score for task {task!r} on the compressed model")
        n_base = normalised_score(base_score, random_scores[task])
        if n_base <= 0:
            raise ValueError(
                f"the base model scores {base_score:.3f} on {task!r}, at or below chance "
                f"({random_scores[task]:.3f}): retention is undefined for this task"
            )
        n_comp = normalised_score(compressed[task], random_scores[task])
        ratios.append(max(0.0, n_comp) / n_base)
    return sum(ratios) / len(ratios)


def srcr(retention: float, sparsity: float, bits: int) -> float:
    """SrCr = Sr / kappa(s, q): retention per unit of capacity kept (1 for the base model)."""
    return retention / capacity_kept(sparsity, bits)


@dataclass(frozen=True)
class Tensor2D:
    """Shape of one parameter, and whether the engine compresses it."""

    name: str
    rows: int  # output features
    cols: int  # input features (1 for vectors)
    compressible: bool


def packed_linear_bytes(
    rows: int, cols: int, bits: int, group_size: int | None, symmetric: bool
) -> int:
    """Bytes of one Linear weight in compressed-tensors' pack-quantized format.

    Values are packed ``32 // bits`` to an int32 along each row; scales are 16-bit, one per group
    and row; asymmetric zero-points are packed like the values, along the columns of the
    (rows, groups) zero-point matrix. Pruned weights are stored as zeros: sparsity saves nothing.
    """
    if bits >= FULL_BITS:
        return rows * cols * 2
    per_int = 32 // bits
    groups = 1 if group_size is None else math.ceil(cols / group_size)
    values = rows * math.ceil(cols / per_int) * 4
    scales = rows * groups * 2
    zero_points = 0 if symmetric else math.ceil(rows / per_int) * groups * 4
    return values + scales + zero_points


def real_compression_ratio(
    tensors: Iterable[Tensor2D], bits: int, group_size: int | None, symmetric: bool
) -> float:
    """Bytes of the model in 16-bit over bytes of what ``sweep export`` writes (>= 1 is smaller)."""
    base = compressed = 0
    for t in tensors:
        dense = t.rows * t.cols * 2
        base += dense
        if t.compressible:
            compressed += packed_linear_bytes(t.rows, t.cols, bits, group_size, symmetric)
        else:
            compressed += dense
    if compressed == 0:
        raise ValueError("the model has no parameters")
    return base / compressed
