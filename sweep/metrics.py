"""The project's metrics, defined once: TCr, real compression ratio, Sr and SrCr.

Definitions (see docs/methods.md, "How the metrics are defined"):

- ``TCr(s, q) = 1 - (1 - s) * q / 16``: the paper's theoretical compression rate, with ``s`` the
  pruned fraction of the compressible weights and ``q`` the bit-width (16 = not quantized).
- ``n_t = (a_t - r_t) / (1 - r_t)``: a task score normalised so that random guessing is 0 and a
  perfect score is 1.
- ``Sr = mean_t max(0, n_t(compressed)) / n_t(base)``: semantic retention.
- ``SrCr = Sr / kappa(s, q)`` with ``kappa(s, q) = sqrt(1 - s) * log2(q) / log2(16)``.

When layers differ (``sweep.compress.profile``), layer l with n_l weights, sparsity s_l and
width q_l: ``TCr = 1 - sum_l n_l (1 - s_l) q_l / (16 sum_l n_l)`` and ``kappa`` is the mean of
``kappa(s_l, q_l)`` weighted by n_l. Both reduce to the uniform formulas when the layers agree.

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


@dataclass(frozen=True)
class LayerShare:
    """One compressible layer as the metrics count it: weights, pruned fraction, bit-width."""

    weights: int
    sparsity: float
    bits: int


def layerwise_compression_rate(layers: Iterable[LayerShare]) -> float:
    """TCr over layers that differ: 1 - sum n_l (1 - s_l) q_l / (16 sum n_l)."""
    layers = list(layers)
    total = sum(layer.weights for layer in layers)
    if total == 0:
        raise ValueError("no compressible weights")
    kept_bits = 0.0
    for layer in layers:
        _check_sparsity_and_bits(layer.sparsity, layer.bits)
        kept_bits += layer.weights * (1.0 - layer.sparsity) * layer.bits
    return 1.0 - kept_bits / (FULL_BITS * total)


def layerwise_capacity(layers: Iterable[LayerShare]) -> float:
    """kappa over layers that differ: the mean of kappa(s_l, q_l) weighted by n_l."""
    layers = list(layers)
    total = sum(layer.weights for layer in layers)
    if total == 0:
        raise ValueError("no compressible weights")
    weighted = sum(layer.weights * capacity_kept(layer.sparsity, layer.bits) for layer in layers)
    return weighted / total


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
        ratios.append(task_retention(compressed[task], base_score, random_scores[task], task))
    return sum(ratios) / len(ratios)


def task_retention(score: float, base_score: float, random_score: float, task: str = "") -> float:
    """One task's term of Sr: max(0, n_t(compressed)) / n_t(base)."""
    n_base = normalised_score(base_score, random_score)
    if n_base <= 0:
        raise ValueError(
            f"the base model scores {base_score:.3f} on {task!r}, at or below chance "
            f"({random_score:.3f}): retention is undefined for this task"
        )
    return max(0.0, normalised_score(score, random_score)) / n_base


def srcr(retention: float, capacity: float) -> float:
    """SrCr = Sr / kappa: retention per unit of capacity kept (1 for the base model), with
    ``capacity`` kappa as ``capacity_kept`` (uniform) or ``layerwise_capacity`` gives it."""
    return retention / capacity


@dataclass(frozen=True)
class Tensor2D:
    """Shape of one parameter, and whether the engine compresses it."""

    name: str
    rows: int  # output features
    cols: int  # input features (1 for vectors)
    compressible: bool


def packed_linear_bytes(
    rows: int, cols: int, bits: int, group_size: int | None, symmetric: bool, fmt: str = "int"
) -> int:
    """Bytes of one Linear weight as ``sweep export`` writes it (``sweep.export.checkpoint``):
    dense 16-bit when not quantized, else compressed-tensors' pack-quantized format.

    Packed, the ``bits``-bit codes of each row fill int32 words densely (32 codes in ``bits``
    words, a code may straddle two words): ``ceil(cols * bits / 32)`` words a row. Scales are
    16-bit, one per group and row; asymmetric zero-points are packed the same way along the rows
    of the (rows, groups) zero-point matrix; ``weight_shape`` is two int64. Pruned weights are
    stored as zeros: sparsity saves nothing. The file's header (names and shapes, ~100 bytes a
    tensor) is not counted.

    A float ``fmt`` (``sweep.compress.formats``) stores one byte per FP8 value and two 4-bit
    values a byte for NVFP4 and MXFP4; FP8's scales are 16-bit, one per row; NVFP4's are one byte
    (e4m3) per group of 16 plus a 4-byte tensor scale; MXFP4's one byte (e8m0) per group of 32.
    """
    if bits >= FULL_BITS:
        return rows * cols * 2
    if fmt != "int":
        groups = 1 if group_size is None else math.ceil(cols / group_size)
        values = rows * cols if bits == 8 else rows * math.ceil(cols / 2)
        scale_bytes = 2 if fmt == "fp8" else 1
        return values + rows * groups * scale_bytes + (4 if fmt == "nvfp4" else 0)
    groups = 1 if group_size is None else math.ceil(cols / group_size)
    values = rows * math.ceil(cols * bits / 32) * 4
    scales = rows * groups * 2
    zero_points = 0 if symmetric else math.ceil(rows * bits / 32) * groups * 4
    shape = 2 * 8
    return values + scales + zero_points + shape


def real_compression_ratio(
    tensors: Iterable[Tensor2D],
    bits: int | Mapping[str, int],
    group_size: int | None,
    symmetric: bool,
    fmt: str = "int",
) -> float:
    """Bytes of the model in 16-bit over bytes of what ``sweep export`` writes (>= 1 is smaller).
    ``bits``: one width for every compressible tensor, or each one's by tensor name; ``fmt``
    the weight format (``packed_linear_bytes``)."""
    base = compressed = 0
    for t in tensors:
        dense = t.rows * t.cols * 2
        base += dense
        if t.compressible:
            width = bits if isinstance(bits, int) else bits[t.name]
            compressed += packed_linear_bytes(t.rows, t.cols, width, group_size, symmetric, fmt)
        else:
            compressed += dense
    if compressed == 0:
        raise ValueError("the model has no parameters")
    return base / compressed


@dataclass(frozen=True)
class Metric:
    """How one measured quantity of a trial is named and shown, everywhere it is shown."""

    name: str  # key in a trial's record, its stored attributes and the trials CSV
    label: str  # short: table headers, the dashboard's objective names
    title: str  # long: plot axes, the model card
    fmt: str  # format of one value
    objective: bool = False  # a study may maximise it
    bounded: bool = False  # a study may constrain it to a band

    def show(self, value: float | None) -> str:
        return "–" if value is None else self.fmt.format(value)


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("srcr", "SrCr", "SrCr (retention per capacity kept)", "{:.4f}", objective=True),
        Metric("sr", "Sr", "Sr (semantic retention)", "{:.4f}", objective=True, bounded=True),
        Metric("tcr", "TCr", "TCr (theoretical compression rate)", "{:.4f}", True, True),
        Metric(
            "real_ratio",
            "real ratio",
            "real compression ratio (16-bit bytes / bytes written)",
            "{:.2f}x",
            objective=True,
            bounded=True,
        ),
        Metric(
            "deploy_ratio",
            "deploy ratio",
            "deploy ratio (16-bit bytes / bytes the runtime holds)",
            "{:.2f}x",
            objective=True,
            bounded=True,
        ),
        Metric("measured_sparsity", "sparsity", "measured sparsity of the pruning step", "{:.4f}"),
        Metric(
            "zero_fraction", "zeros", "fraction of exact zeros in the compressed weights", "{:.4f}"
        ),
        Metric("perplexity", "perplexity", "word perplexity on the perplexity task", "{:.3f}"),
        Metric("kl", "KL", "KL proxy (nats per token, base vs compressed model)", "{:.4f}"),
    )
}
OBJECTIVES = tuple(name for name, m in METRICS.items() if m.objective)
BOUNDED = tuple(name for name, m in METRICS.items() if m.bounded)
