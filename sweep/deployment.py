"""Whether a runtime serves a compressed model, why, and what it holds: the verdict each trial
of a study with a deploy target carries (``deployable``, ``deploy_reason``, ``deploy_ratio``).

The rules are ``sweep.runtimes``' table; the model's side is its ``Layout``: the size of every
weight and the groups of layers a runtime fuses (``sweep.compress.fused``). A verdict reads only
numbers, so a stored trial is judged again without a model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from sweep.compress.config import CompressionConfig, sparsity_text
from sweep.evaluation.measurement import Measurement
from sweep.metrics import FULL_BITS, Tensor2D, real_compression_ratio
from sweep.runtimes import RUNTIMES, Runtime
from sweep.spec import DeploySpec

DEPLOYABLE = "deployable"  # the Optuna constraint a refused trial misses (1; 0 when served)


@dataclass(frozen=True)
class Layout:
    """A model as the deploy rules read it: its weights' shapes (``sweep.model.tensor_inventory``)
    and the groups of compressible layers a runtime fuses, by module name."""

    inventory: list[Tensor2D]
    fused: list[list[str]]

    def compressible(self) -> list[str]:
        return [t.name.removesuffix(".weight") for t in self.inventory if t.compressible]


@dataclass(frozen=True)
class Verdict:
    deployable: bool
    reason: str
    ratio: float  # 16-bit bytes over the bytes the runtime holds for the weights
    held_bytes: int  # the bytes the runtime holds for the weights


def layer_widths(
    config: CompressionConfig, layers: Mapping[str, Sequence[float]] | None, layout: Layout
) -> dict[str, int]:
    """Each compressible layer's bit-width: from a non-uniform plan (name -> [sparsity, bits]),
    else the config's own."""
    if layers:
        return {name: int(bits) for name, (_, bits) in layers.items()}
    bits = config.canonical().bits
    return dict.fromkeys(layout.compressible(), bits)


def checkpoint_widths(quantization_config: Mapping, layout: Layout) -> dict[str, int]:
    """Each compressible layer's bit-width as a written checkpoint's ``quantization_config``
    (config.json) says it: the first of its ``config_groups`` that targets the layer by name or
    as a ``Linear``, 16 bits when it is ignored or no group targets it."""
    ignored = set(quantization_config.get("ignore") or [])
    groups = list(quantization_config.get("config_groups", {}).values())
    widths = {}
    for name in layout.compressible():
        bits = FULL_BITS
        if name not in ignored:
            for group in groups:
                if name in group["targets"] or "Linear" in group["targets"]:
                    bits = int(group["weights"]["num_bits"])
                    break
        widths[name] = bits
    return widths


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _split_groups(widths: Mapping[str, int], fused: list[list[str]]) -> list[list[str]]:
    return [g for g in fused if len({widths.get(n, FULL_BITS) for n in g}) > 1]


def _split_reason(split: list[list[str]], widths: Mapping[str, int], runtime: Runtime, total: int):
    group = split[0]
    first = group[0]
    other = next(n for n in group if widths.get(n, FULL_BITS) != widths.get(first, FULL_BITS))
    where = first.rsplit(".", 1)[0]
    together = "/".join(_short(n).removesuffix("_proj") for n in group)
    if len(group) > 4:
        together = f"the {len(group)} layers of {where}"
    more = f" ({len(split)} of {total} fused groups split)" if len(split) > 1 else ""
    return (
        f"{where}: {_short(first)} {widths.get(first, FULL_BITS)} bits, {_short(other)} "
        f"{widths.get(other, FULL_BITS)} bits: {runtime.name} needs one scheme for {together}"
        f"{more}"
    )


def _sparsity_words(config: CompressionConfig) -> str:
    c = config.canonical()
    if c.nm:
        return c.pattern
    owl = "OWL " if c.profile == "owl" else ""
    return f"{owl}{sparsity_text(c.sparsity)}"


def assess(
    config: CompressionConfig, widths: Mapping[str, int], layout: Layout, target: DeploySpec
) -> Verdict:
    """The runtime's verdict on ``config`` compressed to these per-layer ``widths``."""
    runtime = RUNTIMES[target.runtime]
    c = config.canonical()
    refusals: list[str] = []
    quantized = sorted({b for b in widths.values() if b < FULL_BITS})
    schemes = []
    for bits in quantized:
        rule = runtime.rule(bits, c.group_size, c.symmetric, c.format, c.activations)
        grid = f"{'channel' if c.group_size is None else f'group {c.group_size}'}, " + (
            "symmetric" if c.symmetric else "asymmetric"
        )
        if c.format != "int":
            grid = c.format
        if rule is None:
            offered = ", ".join(
                f"{r.format} {min(r.bits)}-{max(r.bits)} bits" for r in runtime.weights
            )
            refusals.append(f"{bits}-bit weights ({grid}): {runtime.name} serves {offered}")
        elif not rule.runs_on(target.gpu):
            refusals.append(
                f"{rule.scheme.format(bits=bits)}: {runtime.name} needs compute capability "
                f"{rule.min_capability}, the target GPU is {target.gpu}"
            )
        else:
            schemes.append(rule.scheme.format(bits=bits))
    if quantized and c.act_order and not runtime.act_order:
        refusals.append(f"activation order: {runtime.name} no longer serves it")
    if runtime.fused_share_scheme:
        split = _split_groups(widths, layout.fused)
        if split:
            refusals.append(_split_reason(split, widths, runtime, len(layout.fused)))
    held = widths
    if runtime.holds == "decompressed":
        held = dict.fromkeys(widths, FULL_BITS)
    ratio = real_compression_ratio(
        layout.inventory,
        {f"{n}.weight": b for n, b in held.items()},
        c.group_size,
        c.symmetric,
        c.format,
    )
    held_bytes = round(sum(t.rows * t.cols * 2 for t in layout.inventory) / ratio)
    if refusals:
        return Verdict(False, "; ".join(refusals), ratio, held_bytes)
    notes = []
    if c.prunes:
        notes.append(
            f"{_sparsity_words(c)} sparsity: {runtime.name} serves it dense, no bytes saved"
        )
    if schemes and c.format != "int":
        notes.append(f"served as {'/'.join(schemes)}")
    elif schemes:
        grid = "channel" if c.group_size is None else f"g{c.group_size}"
        notes.append(f"served as {'/'.join(schemes)} {grid}")
    else:
        notes.append("served dense in 16 bits")
    return Verdict(True, "; ".join(notes), ratio, held_bytes)


def judged(
    measurement: Measurement, config: CompressionConfig, layout: Layout, target: DeploySpec
) -> Measurement:
    """``measurement`` with the target's verdict (none without a runtime)."""
    if not target.active:
        return replace(measurement, deployable=None, deploy_reason=None, deploy_ratio=None)
    verdict = assess(config, layer_widths(config, measurement.layers, layout), layout, target)
    return replace(
        measurement,
        deployable=verdict.deployable,
        deploy_reason=verdict.reason,
        deploy_ratio=verdict.ratio,
    )
