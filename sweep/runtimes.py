"""What each runtime serves, as data: one table that the deployability check, the spec's
validation, the export and the documentation's table (docs/deployment.md) all read.

Each rule cites the runtime's own source it mirrors. vLLM's rows are read from vLLM 0.34.0
(``vllm/model_executor/layers/quantization/compressed_tensors/``, "CT/" below); transformers'
from transformers 5.17 with compressed-tensors 0.19, and what it holds in memory is measured
(``tests/test_runtimes.py`` loads an export and counts the bytes of its Linear layers).

A runtime serves a checkpoint (integer weights ``pack-quantized``, or a float format of
``sweep.compress.formats``) when every quantized layer's scheme matches one of its
``WeightRule`` rows at the target GPU's compute capability, its fused layers share one scheme
where it needs them to, and it accepts the config's activation ordering. Weights it does not
quantize are served dense in 16 bits. No runtime here stores sparsity sparsely: a pruned weight
is a dense zero.
"""

from __future__ import annotations

from dataclasses import dataclass

NONE = "none"  # no runtime: the paper's theory alone (TCr), no deployability verdict

# NVIDIA's compute capabilities (CUDA C Programming Guide, "Compute Capabilities"), as
# "major.minor"; a deploy target names one of them
CAPABILITIES = (
    "5.0", "5.2", "5.3", "6.0", "6.1", "6.2", "7.0", "7.2", "7.5", "8.0", "8.6", "8.7", "8.9",
    "9.0", "10.0", "10.1", "10.3", "11.0", "12.0", "12.1",
)  # fmt: skip


def capability_value(capability: str) -> tuple[int, int]:
    """``"8.9"`` -> (8, 9), for comparisons (``"10.0"`` is above ``"9.0"``)."""
    major, minor = capability.split(".")
    return int(major), int(minor)


@dataclass(frozen=True)
class WeightRule:
    """One weight format a runtime serves: its bit-widths, group sizes (None in
    ``group_sizes``: one scale per output channel; ``group_sizes`` None: any group that tiles a
    row), symmetric and asymmetric grids, and the least compute capability (None: any device)."""

    format: str  # "int": integer codes, packed (compressed-tensors' pack-quantized); or a
    # float format of sweep.compress.formats (fp8, nvfp4, mxfp4), whose grid is its own
    bits: tuple[int, ...]
    group_sizes: tuple[int | None, ...] | None
    symmetric: tuple[bool, ...]
    min_capability: str | None
    scheme: str  # how the runtime names what it runs: "W{bits}A16"
    source: str
    activations: str = "none"  # quantized at run time (sweep.compress.activations), or none

    def serves(
        self,
        bits: int,
        group_size: int | None,
        symmetric: bool,
        fmt: str = "int",
        activations: str = "none",
    ) -> bool:
        if (fmt, activations) != (self.format, self.activations):
            return False
        groups_ok = self.group_sizes is None or group_size in self.group_sizes
        return bits in self.bits and groups_ok and symmetric in self.symmetric

    def runs_on(self, capability: str | None) -> bool:
        """Whether a GPU of ``capability`` runs it (None: the target named no GPU)."""
        if self.min_capability is None or capability is None:
            return True
        return capability_value(capability) >= capability_value(self.min_capability)


@dataclass(frozen=True)
class Runtime:
    """What one runtime loads and holds. ``fused_share_scheme``: the layers it fuses (those
    reading one input: q/k/v, gate/up; an MoE block's experts) must have one scheme.
    ``sparse_formats``: sparsity encodings it stores sparsely (none today). ``holds``: what its
    memory holds for a quantized layer, ``packed`` (the checkpoint's codes and scales) or
    ``decompressed`` (16-bit weights)."""

    name: str
    title: str
    weights: tuple[WeightRule, ...]
    fused_share_scheme: bool
    fused_source: str
    sparse_formats: tuple[str, ...]
    sparse_source: str
    act_order: bool  # serves a checkpoint whose groups were quantized in activation order
    act_order_source: str
    holds: str
    holds_source: str
    needs_gpu: bool  # its rules depend on the GPU's compute capability

    def rule(
        self,
        bits: int,
        group_size: int | None,
        symmetric: bool,
        fmt: str = "int",
        activations: str = "none",
    ) -> WeightRule | None:
        """The row that serves weights of this format and shape (and these activations), on
        any GPU; None when none does."""
        shape = (bits, group_size, symmetric, fmt, activations)
        return next((r for r in self.weights if r.serves(*shape)), None)


_CT = "vllm 0.34.0 model_executor/layers/quantization/compressed_tensors"

RUNTIMES: dict[str, Runtime] = {
    r.name: r
    for r in (
        Runtime(
            name="vllm",
            title="vLLM 0.34",
            weights=(
                WeightRule(
                    format="int",
                    bits=(2, 3, 4, 5, 6, 7, 8),
                    group_sizes=None,
                    symmetric=(True, False),
                    min_capability="7.5",
                    scheme="W{bits}A16",
                    source=f"{_CT}/schemes/compressed_tensors_wNa16.py: WNA16_SUPPORTED_BITS "
                    "(uint2b2 ... uint8b128, zero points for asymmetric grids), "
                    "get_min_capability() returns 75; group or channel strategy, format "
                    "pack-quantized (compressed_tensors.py _is_wNa16_group_channel)",
                ),
                WeightRule(
                    format="fp8",
                    bits=(8,),
                    group_sizes=(None,),
                    symmetric=(True,),
                    min_capability="8.0",
                    scheme="FP8 W8A16",
                    source=f"{_CT}/schemes/compressed_tensors_w8a16_fp8.py: channel or tensor "
                    "strategy, get_min_capability() returns 80 (FP8 Marlin, 'ampere and up'); "
                    "FP8 W8A8 needs 8.9 (compressed_tensors_w8a8_fp8.py)",
                ),
                WeightRule(
                    format="fp8",
                    bits=(8,),
                    group_sizes=(None,),
                    symmetric=(True,),
                    min_capability="8.9",
                    scheme="FP8 W8A8",
                    source=f"{_CT}/schemes/compressed_tensors_w8a8_fp8.py: channel weights, "
                    "dynamic per-token activations (FP8_DYNAMIC), get_min_capability() returns "
                    "89 (Ada and up); below it vLLM serves the weights alone (W8A16)",
                    activations="fp8_dynamic",
                ),
                WeightRule(
                    format="nvfp4",
                    bits=(4,),
                    group_sizes=(16,),
                    symmetric=(True,),
                    min_capability="7.5",
                    scheme="NVFP4A16",
                    source=f"{_CT}/schemes/compressed_tensors_w4a16_nvfp4.py: group_size 16, "
                    "get_min_capability() returns 75 ('don't restrict as emulations'); format "
                    "nvfp4-pack-quantized; weights and activations (W4A4) need 10.0",
                ),
                WeightRule(
                    format="nvfp4",
                    bits=(4,),
                    group_sizes=(16,),
                    symmetric=(True,),
                    min_capability="10.0",
                    scheme="NVFP4 W4A4",
                    source=f"{_CT}/schemes/compressed_tensors_w4a4_nvfp4.py: weights and "
                    "activations in groups of 16 over calibrated global scales (the input's "
                    "shared by the shards of a fused layer: their max), get_min_capability() "
                    "returns 100 (Blackwell)",
                    activations="nvfp4",
                ),
                WeightRule(
                    format="mxfp4",
                    bits=(4,),
                    group_sizes=(32,),
                    symmetric=(True,),
                    min_capability="7.5",
                    scheme="MXFP4A16",
                    source="llm-compressor's scheme guide (MXFP4A16 weight-only from 7.5); "
                    f"{_CT}: format mxfp4-pack-quantized, e8m0 scales in groups of 32",
                ),
            ),
            fused_share_scheme=True,
            fused_source=f"{_CT}/utils.py should_ignore_layer: 'Found different quantization "
            "schemes for the shards of {layer_name}. vLLM requires all to use the same "
            "scheme.'; _match_fused_layer loads every shard with the first shard's scheme; "
            "compressed_tensors_moe.py: 'All MoE projections need to have same quantization "
            "scheme'",
            sparse_formats=(),
            sparse_source="vLLM PR #36799 ('Sparse24 models are no longer supported'); "
            f"{_CT}/compressed_tensors.py: 'Sparsity support has been removed from "
            "compressed-tensors'",
            act_order=False,
            act_order_source=f"{_CT}/compressed_tensors.py: 'Compressed-tensors group/dynamic "
            "activation ordering (actorder=...) is no longer supported'",
            holds="packed",
            holds_source="the checkpoint's packed codes, scales and zero points, repacked for "
            "its kernels (Marlin, Humming) at the same size",
            needs_gpu=True,
        ),
        Runtime(
            name="transformers",
            title="transformers 5.17 + compressed-tensors 0.19",
            weights=(
                WeightRule(
                    format="int",
                    bits=(2, 3, 4, 5, 6, 7, 8),
                    group_sizes=None,
                    symmetric=(True, False),
                    min_capability=None,
                    scheme="pack-quantized int{bits}",
                    source="compressed_tensors/compressors/pack_quantized: pack_to_int32 packs "
                    "1-8 bit codes; transformers' CompressedTensorsHfQuantizer loads them on "
                    "any device",
                ),
            ),
            fused_share_scheme=False,
            fused_source="transformers runs each Linear on its own (no fused q/k/v kernels)",
            sparse_formats=(),
            sparse_source="compressed-tensors 0.18+ lists sparse-bitmask and sparse-24-bitmask "
            "as legacy formats",
            act_order=True,
            act_order_source="compressed-tensors reads actorder 'weight' as static groups",
            holds="packed",
            holds_source="measured: from_pretrained keeps weight_packed (int32), weight_scale "
            "and weight_zero_point in each Linear and unpacks them in its forward "
            "(tests/test_runtimes.py)",
            needs_gpu=False,
        ),
    )
}
RUNTIME_NAMES = (*RUNTIMES, NONE)


def markdown_table() -> str:
    """The documentation's table of what each runtime serves, from ``RUNTIMES``."""
    lines = [
        "| runtime | weights | bits | groups | grids | least GPU | sparsity | fused layers "
        "| activation order | holds in memory |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for runtime in RUNTIMES.values():
        for rule in runtime.weights:
            groups = (
                "channel, any group"
                if rule.group_sizes is None
                else ", ".join("channel" if g is None else str(g) for g in rule.group_sizes)
            )
            grids = "/".join("sym" if s else "asym" for s in rule.symmetric)
            gpu = "any" if rule.min_capability is None else rule.min_capability
            sparse = ", ".join(runtime.sparse_formats) or "served dense (no bytes saved)"
            fused = "one scheme per fused group" if runtime.fused_share_scheme else "free"
            low, high = min(rule.bits), max(rule.bits)
            bits = str(low) if low == high else f"{low}-{high}"
            order = "served" if runtime.act_order else "refused"
            acts = "" if rule.activations == "none" else f" + {rule.activations} activations"
            lines.append(
                f"| {runtime.title} | {rule.format}{acts} ({rule.scheme.format(bits='N')}) "
                f"| {bits} "
                f"| {groups} | {grids} | {gpu} | {sparse} | {fused} | {order} "
                f"| {runtime.holds} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":  # python -m sweep.runtimes: the documentation's table
    print(markdown_table())
