"""The compressed model as a checkpoint that ``transformers`` loads with ``from_pretrained``.

A config that quantizes is written in compressed-tensors' pack-quantized format: every Linear
the engine quantized holds ``weight_packed`` (its integer codes, packed densely into int32 by
``pack_to_int32``), ``weight_scale`` (16-bit), ``weight_shape`` and, for asymmetric grids,
``weight_zero_point`` (packed along the rows); the ``quantization_config`` in config.json says
how to read them. The codes and scales are the grids the engine recorded
(``compress_model(..., record_grids=True)``), so the reload in float32 holds exactly the weights
that were evaluated. Everything else, and every weight of a config that does not quantize, is
stored dense in the checkpoint's dtype (pruned weights as zeros).

Our codes k are unsigned, in [0, 2^bits - 1], with an unsigned zero-point z; compressed-tensors
stores signed codes k - 2^(bits-1) and zero-point z - 2^(bits-1) (none for symmetric grids,
whose zero is 2^(bits-1)): the same weights ``scale * (k - z)``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from compressed_tensors.compressors import BaseCompressor, ModelCompressor
from compressed_tensors.compressors.pack_quantized import PackedQuantizationCompressor
from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32
from compressed_tensors.config import CompressionFormat
from compressed_tensors.quantization import (
    QuantizationArgs,
    QuantizationConfig,
    QuantizationScheme,
    QuantizationStatus,
    QuantizationStrategy,
)
from safetensors.torch import save_file
from torch import nn

from sweep.compress.activations import CALIBRATED, NVFP4_GROUP
from sweep.compress.blocks import compressible_linears
from sweep.compress.config import INT, MIXED_BITS, CompressionConfig
from sweep.compress.formats import FloatGrid
from sweep.compress.rtn import QuantGrid
from sweep.export import ExportError

WEIGHTS_FILE = "model.safetensors"


def quantization_args(config: CompressionConfig, bits: int | None = None) -> QuantizationArgs:
    """The compressed-tensors description of ``config``'s weight grid (at ``bits``, for one
    width of a mixed allocation)."""
    if config.format != INT:
        return float_quantization_args(config)
    grouped = config.group_size is not None
    return QuantizationArgs(
        num_bits=config.bits if bits is None else bits,
        type="int",
        symmetric=config.symmetric,
        strategy=QuantizationStrategy.GROUP if grouped else QuantizationStrategy.CHANNEL,
        group_size=config.group_size,
        actorder="weight" if config.act_order else None,  # static groups: no g_idx to store
    )


def float_quantization_args(config: CompressionConfig) -> QuantizationArgs:
    """A float format as compressed-tensors names it: llm-compressor's FP8_DYNAMIC weights,
    NVFP4A16 and MXFP4A16."""
    strategy = {
        "fp8": QuantizationStrategy.CHANNEL,
        "nvfp4": QuantizationStrategy.TENSOR_GROUP,
        "mxfp4": QuantizationStrategy.GROUP,
    }[config.format]
    scale_dtype = {"fp8": None, "nvfp4": torch.float8_e4m3fn, "mxfp4": torch.uint8}[config.format]
    return QuantizationArgs(
        num_bits=config.bits,
        type="float",
        symmetric=True,
        strategy=strategy,
        group_size=config.group_size,
        scale_dtype=scale_dtype,
        zp_dtype=scale_dtype,
        actorder="weight" if config.act_order else None,
    )


def input_activation_args(config: CompressionConfig) -> QuantizationArgs | None:
    """How ``config`` quantizes a Linear's inputs at run time (FP8_DYNAMIC's: e4m3 per token,
    scales computed on the fly; NVFP4's: e2m1 in groups of 16, e4m3 scales computed on the fly
    over a calibrated FP32 scale, ``input_global_scale``); None when it does not."""
    if config.activations == "none":
        return None
    if config.activations == "nvfp4":
        return QuantizationArgs(
            num_bits=4, type="float", symmetric=True, dynamic="local",
            strategy=QuantizationStrategy.TENSOR_GROUP, group_size=NVFP4_GROUP,
            scale_dtype=torch.float8_e4m3fn, zp_dtype=torch.float8_e4m3fn,
        )  # fmt: skip
    return QuantizationArgs(
        num_bits=8, type="float", symmetric=True, dynamic=True,
        strategy=QuantizationStrategy.TOKEN,
    )  # fmt: skip


def storage_format(config: CompressionConfig) -> str:
    """The compressed-tensors format a quantized ``config``'s Linears are stored in."""
    return {
        INT: CompressionFormat.pack_quantized.value,
        "fp8": CompressionFormat.float_quantized.value,
        "nvfp4": CompressionFormat.nvfp4_pack_quantized.value,
        "mxfp4": CompressionFormat.mxfp4_pack_quantized.value,
    }[config.format]


def grid_widths(grids: dict[str, QuantGrid]) -> dict[int, list[str]]:
    """The quantized layers by bit-width (bits -> module names): a mixed allocation's groups."""
    widths: dict[int, list[str]] = {}
    for name, grid in grids.items():
        widths.setdefault(grid.bits, []).append(name)
    return widths


def quantization_config(
    config: CompressionConfig, ignore: list[str], widths: dict[int, list[str]] | None = None
) -> QuantizationConfig:
    """One scheme for every Linear except those in ``ignore``, stored pack-quantized; with
    ``widths`` (bits -> module names, a mixed allocation), one scheme per bit-width targeting
    its layers by name, named ``group_0``, ``group_1``... from the fewest bits up, so that the
    groups' sorted order (the order vLLM matches them in) is that one."""
    fmt = storage_format(config)
    if widths is None:
        schemes = {"group_0": QuantizationScheme(
            targets=["Linear"], weights=quantization_args(config), format=fmt,
            input_activations=input_activation_args(config),
        )}  # fmt: skip
    else:
        schemes = {
            f"group_{i}": QuantizationScheme(
                targets=sorted(widths[bits]), weights=quantization_args(config, bits), format=fmt
            )
            for i, bits in enumerate(sorted(widths))
        }
    return QuantizationConfig(
        config_groups=schemes,
        format=fmt,
        quantization_status=QuantizationStatus.COMPRESSED,
        ignore=ignore,
    )


def pack_linear(
    name: str, weight: torch.Tensor, grid: QuantGrid, scheme: QuantizationScheme, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """The pack-quantized tensors of one Linear (``weight_packed``, ``weight_scale``...), by
    compressed-tensors' own compressor, from the engine's grid."""
    rows, cols = weight.shape
    if grid.group_size is not None and cols % grid.group_size:
        raise ExportError(
            f"{name}: compressed-tensors needs the input size ({cols}) to be a multiple of the "
            f"group size ({grid.group_size})"
        )
    codes = grid.codes(weight)  # (rows, cols), in [0, 2^bits - 1]
    exact = grid.dequantize(codes)  # (rows, cols), float32
    if not torch.equal(exact.to(weight.dtype), weight):
        raise ExportError(f"{name}: the weight is not on its recorded grid")
    if not torch.equal(grid.scale.to(dtype).float(), grid.scale):
        raise ExportError(f"{name}: its scales are not exactly representable in {dtype}")
    offset = 2 ** (grid.bits - 1)
    state = {"weight": exact, "weight_scale": grid.scale}
    if not grid.symmetric:
        state["weight_zero_point"] = (grid.zero - offset).to(torch.int8)  # (rows, n_groups)
    packed = PackedQuantizationCompressor.compress(state, scheme)
    unpacked = unpack_from_int32(packed["weight_packed"], grid.bits, torch.Size((rows, cols)))
    if not torch.equal(unpacked.to(torch.int16) + offset, codes.to(torch.int16)):
        raise ExportError(f"{name}: compressed-tensors packed other codes than the engine's")
    packed["weight_scale"] = packed["weight_scale"].to(dtype)
    return packed


def pack_float_linear(
    name: str, weight: torch.Tensor, grid: FloatGrid, scheme: QuantizationScheme, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """A float-format Linear's tensors (fp8: ``weight`` in e4m3 and ``weight_scale``; nvfp4 and
    mxfp4: ``weight_packed``, ``weight_scale`` and, for nvfp4, ``weight_global_scale``), by
    compressed-tensors' own compressor, from the engine's grid; refused unless they decode to
    the weight that was evaluated."""
    rows, cols = weight.shape
    step = cols if grid.fmt.group_size is None else grid.fmt.group_size
    if cols % step:
        raise ExportError(f"{name}: {grid.fmt.name} needs the input size ({cols}) to be a "
                          f"multiple of {step}")  # fmt: skip
    on_grid = grid.elements(weight) * grid.per_column(cols)  # float32
    state = {"weight": on_grid, "weight_scale": grid.stored_scales()}
    if grid.fmt.tensor_scale:
        state["weight_global_scale"] = torch.tensor([grid.global_scale], dtype=torch.float32)
    compressor = BaseCompressor.load_from_registry(scheme.format)
    packed = compressor.compress(state, scheme)
    if grid.fmt.name == "fp8":
        packed["weight_scale"] = packed["weight_scale"].to(dtype)
    decoded = compressor.decompress(dict(packed), scheme)["weight"].to(dtype)
    if not torch.equal(decoded.float(), weight.float()):
        raise ExportError(
            f"{name}: compressed-tensors decodes other {grid.fmt.name} weights than the ones "
            f"evaluated (the checkpoint's dtype is {dtype})"
        )
    return packed


def checkpoint_tensors(
    model: nn.Module,
    config: CompressionConfig,
    grids: dict[str, QuantGrid],
    dtype: torch.dtype,
) -> dict[str, torch.Tensor]:
    """Every tensor the checkpoint stores, by name, on the CPU: quantized Linears packed (see
    ``pack_linear``), the rest in ``dtype``. A tensor shared by two names (tied embeddings) is
    stored once, under its first name."""
    linears = compressible_linears(model)
    quantized: dict[str, nn.Linear] = {}
    if config.quantizes:
        missing, extra = sorted(set(linears) - set(grids)), sorted(set(grids) - set(linears))
        if missing:
            raise ExportError(
                f"no recorded grid for {len(missing)} quantized layers ({missing[0]}, ...): "
                "compress with compress_model(..., record_grids=True)"
            )
        if extra:
            raise ExportError(f"grids recorded for layers the engine does not compress: {extra}")
        quantized = {name: linears[name] for name in grids}
    weight_of = {id(layer.weight): name for name, layer in quantized.items()}
    mixed = config.canonical().allocation == "mixed"
    schemes: dict[int, QuantizationScheme] = {}  # by bit-width

    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, value in model.state_dict(keep_vars=True).items():
        if id(value) in seen:
            continue
        seen.add(id(value))
        if id(value) in weight_of:
            name = weight_of[id(value)]
            grid = grids[name]
            if isinstance(grid, FloatGrid):
                if grid.fmt.name != config.format:
                    raise ExportError(f"{name}: its recorded grid is not {config.key()}'s")
                scheme = QuantizationScheme(
                    targets=["Linear"], weights=quantization_args(config),
                    format=storage_format(config),
                )  # fmt: skip
                packed = pack_float_linear(name, value.detach().cpu(), grid, scheme, dtype)
                prefix = key.removesuffix("weight")
                tensors.update({prefix + k: v.contiguous() for k, v in packed.items()})
                if config.activations in CALIBRATED:
                    if grid.input_scale is None:
                        raise ExportError(f"{name}: no calibrated input scale for "
                                          f"{config.activations} activations")  # fmt: skip
                    tensors[prefix + "input_global_scale"] = torch.tensor(
                        [grid.input_scale], dtype=torch.float32
                    )
                continue
            if (grid.group_size, grid.symmetric) != (config.group_size, config.symmetric) or (
                grid.bits != config.bits and not (mixed and grid.bits in MIXED_BITS)
            ):
                raise ExportError(f"{name}: its recorded grid is not the one {config.key()} uses")
            if grid.bits not in schemes:
                schemes[grid.bits] = QuantizationScheme(
                    targets=["Linear"], weights=quantization_args(config, grid.bits),
                    format=CompressionFormat.pack_quantized.value,
                )  # fmt: skip
            packed = pack_linear(name, value.detach().cpu(), grid, schemes[grid.bits], dtype)
            prefix = key.removesuffix("weight")
            tensors.update({prefix + k: v.contiguous() for k, v in packed.items()})
        else:
            stored = value.detach().to("cpu")
            tensors[key] = (stored.to(dtype) if stored.is_floating_point() else stored).contiguous()
    return tensors


def write_checkpoint(
    model: nn.Module,
    tokenizer: Any,
    config: CompressionConfig,
    grids: dict[str, QuantGrid],
    out_dir: Path,
    dtype: torch.dtype,
) -> Path:
    """Write ``model``, compressed by ``config``, into ``out_dir``: config.json (with its
    ``quantization_config`` when ``config`` quantizes), model.safetensors, the generation config
    and the tokenizer's files. ``grids`` are ``CompressionResult.grids`` of that compression
    (unused when ``config`` does not quantize); ``dtype`` is the dtype of the dense tensors and
    of the scales (the checkpoint's own 16-bit dtype). Returns ``out_dir``."""
    if not dtype.is_floating_point:
        raise ExportError(f"the checkpoint dtype must be a floating-point type, got {dtype}")
    out_dir = Path(out_dir)
    tensors = checkpoint_tensors(model, config, grids, dtype)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / WEIGHTS_FILE), metadata={"format": "pt"})

    hf_config = copy.deepcopy(model.config)
    hf_config.dtype = dtype
    if hasattr(hf_config, "quantization_config"):
        del hf_config.quantization_config
    hf_config.save_pretrained(out_dir)
    if config.quantizes:
        quantized = set(grids)
        ignore = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        widths = grid_widths(grids) if config.canonical().allocation == "mixed" else None
        qconfig = quantization_config(config, [n for n in ignore if n not in quantized], widths)
        ModelCompressor(quantization_config=qconfig).update_config(str(out_dir))
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(out_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    return out_dir
