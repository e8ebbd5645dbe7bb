"""Non-uniform compression: how much each layer is pruned and how many bits it gets.

Pure functions on numbers and tensors; ``sweep.compress.profile`` measures what they take.

- OWL (Yin et al. 2024, "Outlier Weighed Layerwise Sparsity"): a block whose Wanda scores hold
  more outliers (scores above M times their mean) is pruned less. The blocks' outlier ratios are
  min-max scaled to a width of 2 * lambda and centred so that the mean sparsity over the weights
  is the target.
- Mixed bit-widths: each layer's error at each bit-width (``relative_error``) is known; the
  allocation minimises the sum of the layers' errors under an average-bit budget, by dynamic
  programming over the budget counted in whole units of weights (``allocate_bits``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from sweep.compress.rtn import rtn_quantize

MAX_UNITS = 100_000  # the dynamic programme's states are MAX_UNITS x the widest bit-width


def owl_sparsities(
    ratios: Sequence[float], sizes: Sequence[int], target: float, lam: float
) -> list[float]:
    """Each block's sparsity from its outlier ratio: ``target`` plus an offset in a band of width
    ``2 * lam``, the most outlier-rich block pruned least.

    The offsets are ``lam - 2 * lam * (r - r_min) / (r_max - r_min)``, shifted so that their
    mean weighted by ``sizes`` (weights per block) is 0: the weighted mean sparsity is exactly
    ``target``. Were a block's sparsity to leave [0, 0.99], every offset is shrunk by one factor
    until none does (the band narrows; the mean stays). Equal ratios give uniform sparsity.
    """
    if len(ratios) != len(sizes) or not ratios:
        raise ValueError("one outlier ratio and one size per block, at least one block")
    if not 0.0 <= target < 1.0:
        raise ValueError(f"target sparsity must be in [0, 1), got {target}")
    if lam < 0:
        raise ValueError(f"lambda must be >= 0, got {lam}")
    r = np.asarray(ratios, dtype=np.float64)
    n = np.asarray(sizes, dtype=np.float64)
    spread = r.max() - r.min()
    if spread <= 0 or lam == 0 or target == 0:
        return [float(target)] * len(ratios)
    offsets = lam - 2 * lam * (r - r.min()) / spread
    offsets -= (offsets * n).sum() / n.sum()
    room = min(
        (target / -o for o in offsets if o < 0), default=math.inf
    )  # how far offsets may stretch down to 0
    room = min(room, min(((0.99 - target) / o for o in offsets if o > 0), default=math.inf))
    offsets *= min(1.0, room)
    return [float(target + o) for o in offsets]


def relative_error(
    weight: torch.Tensor, hessian: torch.Tensor, bits: int, group_size: int | None, symmetric: bool
) -> float:
    """How much of a layer's output rounding to ``bits`` loses: tr(D H D^T) / tr(W H W^T), with
    D the round-to-nearest error of ``weight`` (out, in) and ``hessian`` (in, in) its inputs'
    second moment (GPTQ's objective, before GPTQ's error feedback shrinks it)."""
    w = weight.float()
    h = hessian.to(w.device).float()
    d = rtn_quantize(w, bits, group_size, symmetric) - w
    base = float(((w @ h) * w).sum())
    return float(((d @ h) * d).sum()) / base if base > 0 else 0.0


def allocate_bits(
    errors: Mapping[str, Mapping[int, float]], sizes: Mapping[str, int], budget: float
) -> dict[str, int]:
    """A bit-width per layer, from the choices in ``errors`` (layer -> bits -> error), whose
    mean weighted by ``sizes`` (weights per layer) is at most ``budget``, at the least total
    error.

    Exact: sizes are counted in units of their greatest common divisor, and the dynamic
    programme runs over every reachable number of unit-bits up to the budget. Of the totals it
    reaches, the largest wins, then the least error: a layer always prefers more bits, so a
    budget that a uniform width meets is met exactly. Sizes whose divisor leaves more than
    ``MAX_UNITS`` units are counted in coarser units, each rounded up: the mean is then the
    budget to within a unit per layer (a few parts in 10^5 of the weights).
    """
    names = list(errors)
    if not names or set(names) != set(sizes):
        raise ValueError("errors and sizes must name the same, non-empty set of layers")
    unit = math.gcd(*(int(sizes[n]) for n in names))
    total = sum(int(sizes[n]) for n in names)
    if total // unit > MAX_UNITS:  # odd sizes: coarser units, each size rounded up to them
        unit = math.ceil(total / MAX_UNITS)
    units = [math.ceil(int(sizes[n]) / unit) for n in names]
    cap = math.floor(budget * sum(units) + 1e-9)
    choices = [sorted(errors[n]) for n in names]
    if sum(u * c[0] for u, c in zip(units, choices, strict=True)) > cap:
        raise ValueError(
            f"a budget of {budget} bits is below the smallest width on offer ({min(choices[0])})"
        )
    inf = math.inf
    cost = np.full(cap + 1, inf)
    cost[0] = 0.0
    picks: list[np.ndarray] = []
    for name, u, bits_options in zip(names, units, choices, strict=True):
        best = np.full(cap + 1, inf)
        pick = np.zeros(cap + 1, dtype=np.int8)
        for b in bits_options:
            shift = u * b
            if shift > cap:
                continue
            candidate = np.full(cap + 1, inf)
            candidate[shift:] = cost[: cap + 1 - shift] + errors[name][b]
            better = candidate < best
            best[better] = candidate[better]
            pick[better] = b
        cost = best
        picks.append(pick)
    reached = np.flatnonzero(np.isfinite(cost))
    at = int(reached.max())
    out: dict[str, int] = {}
    for name, u, pick in zip(reversed(names), reversed(units), reversed(picks), strict=True):
        b = int(pick[at])
        out[name] = b
        at -= u * b
    assert at == 0
    return {n: out[n] for n in names}
