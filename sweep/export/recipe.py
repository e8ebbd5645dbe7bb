"""The llm-compressor recipe closest to a configuration, for users who run their own pipeline
(`oneshot(model=..., dataset=..., recipe="recipe.yaml")`), and what it cannot express."""

from __future__ import annotations

import textwrap
from typing import Any

import yaml

from sweep.compress import CompressionConfig
from sweep.compress.hessian import BLOCK_SIZE, DAMPENING

IGNORE = ["lm_head"]


PRESETS = {"nvfp4": "NVFP4A16", "mxfp4": "MXFP4A16"}  # llm-compressor's weight-only schemes


def _weights(c: CompressionConfig) -> dict[str, Any]:
    order = {"actorder": "static"} if c.quant_method == "gptq" and c.act_order else {}
    if c.format == "fp8":  # FP8_DYNAMIC's weights, without its activations
        return {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "channel", **order}
    grouped = c.group_size is not None
    return {
        "num_bits": c.bits,
        "type": "int",
        "symmetric": c.symmetric,
        "strategy": "group" if grouped else "channel",
        **({"group_size": c.group_size} if grouped else {}),
        **order,
    }


def _pruning_stage(c: CompressionConfig) -> dict[str, Any]:
    structure = c.pattern if c.nm else "0:0"
    common = {"sparsity": c.target_sparsity, "mask_structure": structure,
              "targets": ["Linear"], "ignore": list(IGNORE)}  # fmt: skip
    if c.profile == "owl" and c.prune_method in ("sparsegpt", "wanda"):
        common.update(sparsity_profile="owl", owl_m=round(c.owl_m), owl_lmbda=c.owl_lambda)
    if c.prune_method == "sparsegpt":
        modifier = {"SparseGPTModifier": {**common, "dampening_frac": DAMPENING,
                                          "block_size": BLOCK_SIZE}}  # fmt: skip
    elif c.prune_method == "wanda":
        modifier = {"WandaPruningModifier": common}
    else:
        modifier = {
            "MagnitudePruningModifier": {
                "init_sparsity": c.target_sparsity, "final_sparsity": c.target_sparsity,
                "mask_structure": structure, "targets": ["re:.*layers.*weight$"],
                "start": 0, "end": 1, "update": 1,
            }
        }  # fmt: skip
    return {"pruning_modifiers": modifier}


def _quant_stage(c: CompressionConfig, widths: dict[int, list[str]] | None) -> dict[str, Any]:
    groups = {"group_0": {"targets": ["Linear"], "weights": _weights(c)}}
    if c.allocation == "mixed" and widths:
        groups = {
            f"group_{i}": {"targets": sorted(widths[bits]), "weights": {**_weights(c),
                                                                        "num_bits": bits}}
            for i, bits in enumerate(sorted(widths))
        }  # fmt: skip
    what: dict[str, Any] = {"config_groups": groups}
    if c.format in PRESETS:
        what = {"targets": ["Linear"], "scheme": PRESETS[c.format]}
    if c.activations == "fp8_dynamic":  # FP8 weights per channel, FP8 activations per token
        what = {"targets": ["Linear"], "scheme": "FP8_DYNAMIC"}
    if c.activations == "nvfp4":  # NVFP4 weights and activations, the latter calibrated
        what = {"targets": ["Linear"], "scheme": "NVFP4"}
    if c.quant_method == "gptq":
        gptq = {"dampening_frac": DAMPENING, "block_size": BLOCK_SIZE}
        modifier = {"GPTQModifier": {**what, "ignore": list(IGNORE), **gptq}}
    else:
        modifier = {"QuantizationModifier": {**what, "ignore": list(IGNORE)}}
    return {"quant_modifiers": modifier}


def recipe_limits(config: CompressionConfig) -> list[str]:
    """What the recipe does differently from the engine for ``config`` (empty: nothing)."""
    c = config.canonical()
    notes = []
    if c.prunes and c.prune_method == "magnitude":
        notes.append(
            "llm-compressor has no one-shot magnitude pruning; MagnitudePruningModifier is a "
            "training-time schedule, set here to apply the final sparsity from its first step"
        )
    if c.prunes and c.quantizes:
        if c.order == "prune_first" and c.case == "B" and c.quant_method == "gptq":
            notes.append(
                "Case B is not expressible: llm-compressor's GPTQ does not keep the pruning "
                "mask, so pruned weights may become non-zero again (Case A)"
            )
        if c.order == "quant_first":
            notes.append(
                "quantize-then-prune is not expressible: the pruning stage runs after "
                "quantization, but llm-compressor's pruners update the kept weights off the "
                "quantization grid (the engine prunes the quantized weights by mask only)"
            )
        if c.order == "joint":
            notes.append(
                "the joint one-pass SparseGPT with a quantizer (Optimal Brain Compression) is "
                "not expressible: the recipe prunes with SparseGPT, then quantizes with GPTQ"
            )
    if c.profile == "owl":
        notes.append(
            "OWL's layer sparsities differ a little: llm-compressor weighs weights by each "
            "sample's input norm averaged over samples, the engine by the root mean square over "
            "tokens, and the engine narrows the band when a layer would leave [0, 0.99]"
            + ("; magnitude pruning has no OWL profile there at all"
               if c.prune_method == "magnitude" else "")
        )  # fmt: skip
        if c.owl_m != round(c.owl_m):
            notes.append(f"llm-compressor's owl_m is an integer: {c.owl_m:g} becomes "
                         f"{round(c.owl_m)}")  # fmt: skip
    if c.allocation == "mixed":
        notes.append(
            "llm-compressor does not allocate bit-widths: the recipe lists, as one config group "
            "per width, the allocation this trial's error model made (sweep.compress.profile)"
        )
    return notes


def recipe(config: CompressionConfig, widths: dict[int, list[str]] | None = None) -> dict[str, Any]:
    """The recipe as a mapping of stages (pruning first unless the config quantizes first);
    ``widths`` (bits -> module names) is the allocation of a mixed config."""
    c = config.canonical()
    stages: list[tuple[str, dict[str, Any]]] = []
    if c.prunes:
        stages.append(("pruning_stage", _pruning_stage(c)))
    if c.quantizes:
        stage = ("quant_stage", _quant_stage(c, widths))
        stages.insert(0, stage) if c.order == "quant_first" else stages.append(stage)
    return dict(stages)


def recipe_yaml(config: CompressionConfig, widths: dict[int, list[str]] | None = None) -> str:
    """The recipe as YAML, headed by comments naming the configuration and the recipe's limits
    (``widths``: see ``recipe``)."""
    c = config.canonical()
    lines = [f"# llm-compressor recipe for: {c.key()}"]
    lines += ["# Use: oneshot(model=..., dataset=..., recipe='recipe.yaml')"]
    limits = recipe_limits(c)
    if limits:
        lines += ["# Differences from the sweep engine (sweep compress reproduces it exactly):"]
        for note in limits:
            wrapped = textwrap.wrap(note, 96, initial_indent="# - ", subsequent_indent="#   ")
            lines += wrapped
    body = yaml.safe_dump(recipe(c, widths), sort_keys=False) if c.prunes or c.quantizes else "{}\n"
    return "\n".join(lines) + "\n" + body
