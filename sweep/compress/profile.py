"""What a non-uniform configuration reads of the base model, layer by layer, and the per-layer
plan it makes of it.

A ``LayerProfile`` holds, for the compressible Linears of one model and calibration set: their
sizes and blocks, each block's OWL outlier ratio (per M), and each layer's relative error at
each bit-width (per grid shape: group size and symmetry). It is measured from the base model's
weights and calibration statistics, once: kept beside the calibration cache's entry, later
trials read it without touching a Hessian.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from torch import nn

from sweep.compress.allocation import allocate_bits, owl_sparsities, relative_error
from sweep.compress.calibration import LayerStats
from sweep.compress.config import MIXED_BITS, CompressionConfig, grid_name
from sweep.compress.wanda import wanda_scores


@dataclass
class LayerProfile:
    """Per-layer facts of a base model that the non-uniform allocations read."""

    sizes: dict[str, int]  # weights of each compressible Linear, by parameter-free module name
    blocks: dict[str, int]  # the transformer block each one is in
    outliers: dict[str, list[float]] = field(default_factory=dict)  # str(M) -> one per block
    errors: dict[str, dict[str, dict[int, float]]] = field(default_factory=dict)  # grid -> layer
    # the groups of layers a runtime fuses (``sweep.compress.fused``); None: not found yet
    fused: list[list[str]] | None = None

    def missing(self, config: CompressionConfig) -> tuple[str | None, str | None]:
        """What ``config``'s plan needs and is not measured yet: the outlier ratios' key (its M)
        and the errors' key (its grid shape), each None when measured or not needed."""
        m, grid = str(config.owl_m), grid_name(config.group_size, config.symmetric)
        return (
            m if config.profile == "owl" and m not in self.outliers else None,
            grid if config.allocation == "mixed" and grid not in self.errors else None,
        )

    def to_dict(self) -> dict:
        return {"sizes": self.sizes, "blocks": self.blocks, "outliers": self.outliers,
                "errors": self.errors, "fused": self.fused}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict) -> LayerProfile:
        errors = {
            g: {name: {int(b): e for b, e in per_bits.items()} for name, per_bits in layers.items()}
            for g, layers in data.get("errors", {}).items()
        }
        return cls(
            data["sizes"], data["blocks"], data.get("outliers", {}), errors, data.get("fused")
        )


def empty_profile(linears: list[dict[str, nn.Linear]]) -> LayerProfile:
    """The sizes and blocks of ``linears`` (one mapping per block), nothing measured yet."""
    sizes, blocks = {}, {}
    for index, block in enumerate(linears):
        for name, layer in block.items():
            sizes[name] = layer.weight.numel()
            blocks[name] = index
    return LayerProfile(sizes, blocks)


def measure_profile(
    profile: LayerProfile,
    linears: list[dict[str, nn.Linear]],
    stats: Iterable[dict[str, LayerStats]],
    config: CompressionConfig,
) -> None:
    """Add to ``profile`` what ``config`` needs and it lacks, from the base model's ``linears``
    (one mapping per block, holding the base weights) and their ``stats`` (one mapping per block,
    in block order, with Hessians when the config allocates bits)."""
    want_outliers, want_errors = profile.missing(config)
    ratios: list[float] = []
    errors: dict[str, dict[int, float]] = {}
    for block, block_stats in zip(linears, stats, strict=True):
        if want_outliers:
            scores = [wanda_scores(layer.weight, block_stats[n].sq_norms) for n, layer in
                      block.items()]  # fmt: skip
            count = sum(s.numel() for s in scores)
            mean = sum(float(s.sum()) for s in scores) / count
            over = sum(float((s > config.owl_m * mean).sum()) for s in scores)
            ratios.append(over / count)
        if want_errors:
            for name, layer in block.items():
                hessian = block_stats[name].hessian
                if hessian is None:
                    raise ValueError(f"{name}: mixed bit-widths need Hessian statistics")
                errors[name] = {
                    b: relative_error(layer.weight, hessian, b, config.group_size,
                                      config.symmetric)
                    for b in MIXED_BITS
                }  # fmt: skip
    if want_outliers:
        profile.outliers[want_outliers] = ratios
    if want_errors:
        profile.errors[want_errors] = errors


def layer_plan(config: CompressionConfig, profile: LayerProfile) -> dict[str, tuple[float, int]]:
    """Each layer's (sparsity, bits) under ``config``: OWL's sparsity per block, bits allocated
    under the config's bit-width as average budget, or the config's own where uniform.

    A mixed allocation gives one width to each of the profile's groups of fused layers (those a
    runtime fuses, ``sweep.compress.fused``), the group's error at a width being the sum of its
    layers'."""
    names = list(profile.sizes)
    sparsity = {n: config.sparsity for n in names}
    if config.profile == "owl":
        ratios = profile.outliers[str(config.owl_m)]
        block_sizes = [0] * len(ratios)
        for n in names:
            block_sizes[profile.blocks[n]] += profile.sizes[n]
        per_block = owl_sparsities(ratios, block_sizes, config.sparsity, config.owl_lambda)
        sparsity = {n: per_block[profile.blocks[n]] for n in names}
    bits = {n: config.bits for n in names}
    if config.allocation == "mixed":
        errors = profile.errors[grid_name(config.group_size, config.symmetric)]
        bits = allocate_grouped(errors, profile.sizes, config.bits, profile.fused or [])
    return {n: (sparsity[n], bits[n]) for n in names}


def allocate_grouped(
    errors: Mapping[str, Mapping[int, float]],
    sizes: Mapping[str, int],
    budget: float,
    fused: Sequence[Sequence[str]],
) -> dict[str, int]:
    """``allocate_bits`` with each group of ``fused`` layers as one unit: its size and its error
    at each width the sums of its layers'; every layer of a group gets the group's width."""
    leader = {name: name for name in errors}
    for group in fused:
        for name in group:
            leader[name] = group[0]
    members: dict[str, list[str]] = {}
    for name in errors:
        members.setdefault(leader[name], []).append(name)
    unit_errors = {
        lead: {b: sum(errors[n][b] for n in names) for b in errors[lead]}
        for lead, names in members.items()
    }
    unit_sizes = {lead: sum(sizes[n] for n in names) for lead, names in members.items()}
    widths = allocate_bits(unit_errors, unit_sizes, budget)
    return {name: widths[leader[name]] for name in errors}
