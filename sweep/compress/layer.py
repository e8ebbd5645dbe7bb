"""Compress one weight matrix by a config: the orderings and Case A/B, on top of the methods."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch

from sweep.compress.activations import CALIBRATED
from sweep.compress.config import CompressionConfig
from sweep.compress.formats import FloatGrid
from sweep.compress.registry import JOINT_PRUNERS, PRUNERS, QUANTIZERS, PruneTarget
from sweep.compress.rtn import QuantGrid, QuantSpec

if TYPE_CHECKING:
    from sweep.compress.calibration import LayerStats


def uses_joint_pass(config: CompressionConfig) -> bool:
    """True when ``config`` prunes and quantizes in one pass (order "joint", a joint pruner)."""
    return (
        config.prunes
        and config.quantizes
        and config.order == "joint"
        and config.prune_method in JOINT_PRUNERS
    )


def needed_stats(config: CompressionConfig) -> frozenset[str]:
    """The calibration statistics ("hessian", "sq_norms") that ``config``'s methods read."""
    need: frozenset[str] = frozenset()
    if config.prunes:
        need |= PRUNERS.needs(config.prune_method)
    if config.quantizes:
        need |= QUANTIZERS.needs(config.quant_method)
    if uses_joint_pass(config):
        need |= JOINT_PRUNERS.needs(config.prune_method)
    c = config.canonical()
    if c.profile == "owl":  # OWL weighs weights by their inputs' norms, as Wanda does
        need |= {"sq_norms"}
    if c.allocation == "mixed":  # each layer's error at each width is measured on its Hessian
        need |= {"hessian"}
    return need


def requires_calibration(config: CompressionConfig) -> bool:
    """Whether ``config`` needs calibration data (False for magnitude pruning and RTN, unless
    its activations have a calibrated scale)."""
    return bool(needed_stats(config)) or config.activations in CALIBRATED


def quant_spec(config: CompressionConfig) -> QuantSpec:
    """The grid shape (bits, group size, symmetry) that ``config`` quantizes onto."""
    return QuantSpec(config.bits, config.group_size, config.symmetric, config.format)


def prune_target(config: CompressionConfig) -> PruneTarget:
    """What the pruning step of ``config`` asks for."""
    return PruneTarget(config.target_sparsity, config.nm)


def compress_weight(
    weight: torch.Tensor,
    config: CompressionConfig,
    stats: LayerStats | None = None,
    grid: QuantGrid | FloatGrid | None = None,
    tensor_scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (compressed weight, keep-mask of the pruning step) for ``weight`` (out, in).

    Orders, when the config both prunes and quantizes:

    - ``prune_first``: prune, then quantize. Case A quantizes every weight (GPTQ's error feedback
      may make pruned weights non-zero again); Case B passes the keep-mask to the quantizer, so
      pruned weights stay exactly zero.
    - ``quant_first``: quantize every weight, then prune the quantized weight by the pruner's mask
      (the pruner's own weight update is dropped so kept weights stay on the grid): the result
      has exactly the target sparsity.
    - ``joint``: with a joint pruner (SparseGPT), one pass that prunes and quantizes each column
      with error feedback (Optimal Brain Compression); the quantizer's method and ``act_order``
      are not used, its grid (bits, group size, symmetry) is. Other pruners fall back to
      ``prune_first`` Case B.

    ``stats`` carries calibration statistics for methods that need them (None for data-free ones).
    ``grid``, an out-parameter for quantizing configs (``QuantGrid.empty(rows, cols,
    quant_spec(config))``), receives the scale and zero-point of every group of the final weight;
    it is left as it is when the config does not quantize. ``tensor_scale`` fixes NVFP4's tensor
    scale (see ``QuantSpec``).
    """
    w = weight.float()  # (out, in)
    keep = torch.ones_like(w, dtype=torch.bool)
    if not (config.prunes or config.quantizes):
        return weight.clone(), keep
    prune = PRUNERS.get(config.prune_method)
    quantize = QUANTIZERS.get(config.quant_method)
    target = prune_target(config)
    spec = dataclasses.replace(quant_spec(config), tensor_scale=tensor_scale)
    if grid is not None and config.quantizes and not grid.fits(*w.shape, spec):
        raise ValueError(f"grid does not fit a {tuple(w.shape)} weight quantized by {config}")

    if config.prunes and config.quantizes and config.order == "quant_first":
        w = quantize(w, spec=spec, stats=stats, act_order=config.act_order, grid=grid)
        _, keep = prune(w, target=target, stats=stats)
        return (w * keep).to(weight.dtype), keep

    if uses_joint_pass(config):
        joint = JOINT_PRUNERS.get(config.prune_method)
        w, keep = joint(w, target=target, spec=spec, stats=stats, grid=grid)
        return w.to(weight.dtype), keep

    if config.prunes:
        w, keep = prune(w, target=target, stats=stats)
    if config.quantizes:
        case_b = config.prunes and (config.case == "B" or config.order == "joint")
        w = quantize(
            w,
            spec=spec,
            stats=stats,
            mask=keep if case_b else None,
            act_order=config.act_order,
            grid=grid,
        )
    return w.to(weight.dtype), keep
