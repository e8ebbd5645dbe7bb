"""Walk a causal LM block by block and compress the Linear layers inside its blocks.

Data-free configs (magnitude, RTN) compress each Linear on its own. Configs that need
calibration statistics walk the blocks as the reference GPTQ/SparseGPT drivers do: capture the
inputs of block 0 (a forward stopped by a hook), then for each block collect its Linears' input
statistics with forward hooks, compress, and run the block to get the next block's inputs. Only
one block's activations are held at a time.

- ``mode="sequential"``: each block is calibrated on the outputs of the blocks already
  compressed (the reference behaviour); the statistics depend on the config.
- ``mode="cached"``: every block is calibrated on the base model's activations; the statistics
  are computed once per (model, calibration set) and kept in a ``CalibrationCache``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from sweep.compress.activations import CALIBRATED, calibrate_input_scales
from sweep.compress.blocks import block_linears, compressible_linears, find_blocks
from sweep.compress.calibration import (
    Calibration,
    CalibrationCache,
    LayerStats,
    StatsCollector,
    calibration_key,
    legacy_calibration_key,
    move_stats,
)
from sweep.compress.config import CompressionConfig
from sweep.compress.formats import FORMATS, FloatGrid, as_decoded, shared_tensor_scale
from sweep.compress.fused import fused_groups, shared_input_groups
from sweep.compress.layer import compress_weight, needed_stats, quant_spec
from sweep.compress.profile import LayerProfile, empty_profile, layer_plan, measure_profile
from sweep.compress.rounding import empty_grid
from sweep.compress.rtn import QuantGrid


@dataclass
class CompressionResult:
    """What the engine did: the measured sparsity of the pruning step and of the final weights,
    and (with ``record_grids``) the quantization grid of every quantized Linear, by module name."""

    pruned_fraction: (
        float  # fraction removed by the pruning step (the mask), over compressible weights
    )
    zero_fraction: float  # fraction of exact zeros in the final compressible weights
    seconds: float
    layers: dict[str, float] = field(default_factory=dict)  # per-layer pruned fraction
    bits: dict[str, int] = field(default_factory=dict)  # per-layer bit-width (16: not quantized)
    calibration_s: float = 0.0  # time spent on calibration forward passes and statistics
    stats_from_cache: bool = False  # statistics reused from a CalibrationCache (no forward pass)
    grids: dict[str, QuantGrid] = field(default_factory=dict)  # on the CPU
    # calibrated activations' scale over each layer's inputs (sweep.compress.activations)
    input_scales: dict[str, float] = field(default_factory=dict)

    def plan(self) -> dict[str, list[float]]:
        """What each layer got: module name -> [pruned fraction, bits]."""
        return {name: [pruned, self.bits[name]] for name, pruned in self.layers.items()}


class _InPlaceCompressor:
    """Compresses Linear layers one by one, writing each result into the model; counts the
    pruned and zero weights, and keeps the grids of quantized layers when asked to."""

    def __init__(
        self, record_grids: bool = False, storage_dtype: torch.dtype | None = None
    ) -> None:
        self.total = self.pruned = self.zeros = 0
        self.layers: dict[str, float] = {}
        self.bits: dict[str, int] = {}
        self.plan: dict[str, tuple[float, int]] | None = None
        self.record_grids = record_grids
        self.storage_dtype = storage_dtype
        self.grids: dict[str, QuantGrid] = {}
        self.tensor_scales: dict[str, float] = {}  # NVFP4's, by layer, for fused groups

    def compress(
        self, name: str, layer: nn.Linear, config: CompressionConfig, stats: LayerStats | None
    ) -> None:
        if self.plan is not None:
            config = config.for_layer(*self.plan[name])
        grid = None
        if self.record_grids and config.quantizes:
            rows, cols = layer.weight.shape
            grid = empty_grid(rows, cols, quant_spec(config), layer.weight.device)
        weight, keep = compress_weight(
            layer.weight.data, config, stats, grid, self.tensor_scales.get(name)
        )
        if grid is not None:
            self.grids[name] = grid.to("cpu")
        if self.storage_dtype is not None and not config.quantizes:
            weight = weight.to(self.storage_dtype)
        elif self.storage_dtype is not None and config.format != "int":
            # an integer grid's values scale * (k - zero) are what its checkpoint decodes to; a
            # float format's checkpoint decodes value * scale into a 16-bit dtype, rounded
            weight = as_decoded(weight, FORMATS[config.format], self.storage_dtype)
        layer.weight.data.copy_(weight)
        n = keep.numel()
        n_pruned = n - int(keep.sum())
        self.total += n
        self.pruned += n_pruned
        self.zeros += int((weight == 0).sum())
        self.layers[name] = n_pruned / n
        self.bits[name] = config.bits

    def result(self, start: float, calibration_s: float, from_cache: bool) -> CompressionResult:
        return CompressionResult(
            pruned_fraction=self.pruned / self.total,
            zero_fraction=self.zeros / self.total,
            seconds=time.perf_counter() - start,
            layers=self.layers,
            bits=self.bits,
            calibration_s=calibration_s,
            stats_from_cache=from_cache,
            grids=self.grids,
        )


# --- the layer-wise walk ------------------------------------------------------------------------


class _StopForward(Exception):
    """Raised by the hook on block 0 once its inputs are captured."""


@dataclass
class _BlockCall:
    """One calibration batch as a block receives it: hidden states, other args, kwargs."""

    hidden: torch.Tensor  # (batch, seq, hidden)
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def _move(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_move(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: _move(v, device) for k, v in obj.items()}
    return obj


def capture_block_inputs(
    model: nn.Module, calibration: torch.Tensor, batch_size: int
) -> list[_BlockCall]:
    """Run ``model`` on ``calibration`` (samples, seq_len) up to its first block, per batch."""
    block0 = find_blocks(model)[0]
    calls: list[_BlockCall] = []

    def stop(module: nn.Module, args: tuple, kwargs: dict) -> None:
        kwargs = dict(kwargs)
        hidden = args[0] if args else kwargs.pop("hidden_states")
        calls.append(_BlockCall(hidden, tuple(args[1:]), kwargs))
        raise _StopForward

    device = model.get_input_embeddings().weight.device
    handle = block0.register_forward_pre_hook(stop, with_kwargs=True)
    try:
        for batch in calibration.split(batch_size):
            with contextlib.suppress(_StopForward):
                model(input_ids=batch.to(device), use_cache=False)
    finally:
        handle.remove()
    return calls


def _run_block(
    block: nn.Module, calls: list[_BlockCall], collector: StatsCollector | None, keep: bool
) -> None:
    """Run ``block`` on every batch; with ``keep`` its outputs become the next block's inputs."""
    device = _device(block)
    for call in calls:
        out = block(call.hidden.to(device), *_move(call.args, device), **_move(call.kwargs, device))
        if collector is not None:
            collector.end_batch()
        if keep:
            call.hidden = out[0] if isinstance(out, (tuple, list)) else out


def block_stats(
    model: nn.Module,
    calibration: torch.Tensor,
    hessian: bool = True,
    batch_size: int = 8,
    progress: bool = False,
) -> Iterator[dict[str, LayerStats]]:
    """Input statistics of each block's compressible Linears, one block at a time, of the model
    as it is when each block is reached (on the CPU).

    Each block's statistics and its outputs (the next block's inputs) come from one forward
    over ``calibration`` (samples, seq_len), before the block is yielded: a caller may change
    the block (compress it) and the next block still sees the unchanged block's outputs.
    ``hessian=False`` collects only the squared norms (Wanda).
    """
    with torch.no_grad():
        calls = capture_block_inputs(model, calibration, batch_size)
    walk = tqdm(block_linears(model), desc="calibrate", disable=not progress)
    for block, linears in zip(find_blocks(model), walk, strict=True):
        with torch.no_grad(), StatsCollector(linears, hessian) as collector:
            _run_block(block, calls, collector, keep=True)
        yield move_stats(collector.result(), "cpu")


def collect_stats(
    model: nn.Module,
    calibration: torch.Tensor,
    hessian: bool = True,
    batch_size: int = 8,
    progress: bool = False,
) -> dict[str, LayerStats]:
    """Input statistics of every compressible Linear of ``model`` as it is, on the CPU, in one
    mapping (see ``block_stats``)."""
    stats: dict[str, LayerStats] = {}
    for block in block_stats(model, calibration, hessian, batch_size, progress):
        stats.update(block)
    return stats


class _Timed:
    """An iterator that adds the seconds spent producing each item to ``seconds``."""

    def __init__(self, items: Iterator) -> None:
        self._items = items
        self.seconds = 0.0

    def __iter__(self) -> _Timed:
        return self

    def __next__(self):
        t = time.perf_counter()
        try:
            return next(self._items)
        finally:
            self.seconds += time.perf_counter() - t


@torch.no_grad()
def compress_model(
    model: nn.Module,
    config: CompressionConfig,
    progress: bool = True,
    *,
    calibration: Calibration | None = None,
    record_grids: bool = False,
    storage_dtype: torch.dtype | None = None,
) -> CompressionResult:
    """Compress ``model`` in place by ``config``.

    Data-free configs ignore ``calibration``; others need it (see ``Calibration``). In cached
    mode statistics come from its cache when it holds them for this (model, calibration) and are
    stored there otherwise; without a cache they are computed for this call only. A damaged
    cache entry raises ``CacheCorrupt``, maybe after some blocks were compressed: the caller
    restores the weights, drops the entry and calls again (``TrialRunner.compress`` does).

    ``record_grids`` keeps the grid of every quantized Linear in ``CompressionResult.grids``
    (what the export needs to write its integer codes). ``storage_dtype`` is the dtype the
    checkpoint stores dense weights in: a compressed weight that is not quantized is rounded to
    it before it is copied into the model, so a float32 model evaluates exactly the values a
    16-bit checkpoint holds. A quantized weight is left as it is: its scales are already 16-bit
    and its values ``scale * (k - zero)`` are exactly what the checkpoint's codes decode to.

    Activations with a calibrated scale (NVFP4's) are calibrated last, on the compressed model
    (``CompressionResult.input_scales``).
    """
    if config.activations in CALIBRATED and calibration is None:
        raise ValueError(
            f"{config.activations} activations are calibrated: pass calibration=Calibration(...)"
        )
    result = _compress_weights(model, config, progress, calibration, record_grids, storage_dtype)
    if config.activations in CALIBRATED:
        assert calibration is not None
        t = time.perf_counter()
        result.input_scales = calibrate_input_scales(
            model, calibration.token_ids, calibration.batch_size
        )
        for name, grid in result.grids.items():
            if isinstance(grid, FloatGrid):
                grid.input_scale = result.input_scales[name]
        spent = time.perf_counter() - t
        result.calibration_s += spent
        result.seconds += spent
    return result


def _compress_weights(
    model: nn.Module,
    config: CompressionConfig,
    progress: bool,
    calibration: Calibration | None,
    record_grids: bool,
    storage_dtype: torch.dtype | None,
) -> CompressionResult:
    start = time.perf_counter()
    compressor = _InPlaceCompressor(record_grids, storage_dtype)
    if config.quantizes and config.format != "int" and FORMATS[config.format].tensor_scale:
        compressor.tensor_scales = fused_tensor_scales(model)
    need = needed_stats(config)
    if not need:
        linears = compressible_linears(model)
        for name, layer in tqdm(linears.items(), desc="compress", disable=not progress):
            compressor.compress(name, layer, config, None)
        return compressor.result(start, 0.0, False)

    if calibration is None:
        raise ValueError(
            "this config needs calibration data: pass calibration=Calibration(<token ids>)"
        )
    cache, batch_size, tokens = calibration.cache, calibration.batch_size, calibration.token_ids
    hessian = "hessian" in need
    key = None if cache is None else calibration_key(model, tokens)
    if cache is not None and key is not None:
        cache.adopt(key, legacy_calibration_key(model, tokens))
    plan_s = 0.0
    if config.non_uniform:
        t = time.perf_counter()
        compressor.plan = _layer_plan(
            model, config, tokens, cache, key, hessian, batch_size, progress
        )
        plan_s = time.perf_counter() - t
    if calibration.mode == "sequential":
        calibration_s = _compress_sequential(model, config, tokens, hessian, batch_size, compressor)
        return compressor.result(start, plan_s + calibration_s, False)

    # The base model's statistics, block by block: read back from the cache, or collected
    # (and written to it) as the walk goes, each block compressed once its statistics and
    # outputs are taken. Either way one block's statistics are held at a time.
    from_cache = cache is not None and cache.has(key, hessian)
    if from_cache:
        source = _Timed(cache.blocks(key))
    else:
        source = _Timed(block_stats(model, tokens, hessian, batch_size, progress))
        if cache is not None:
            source = _Timed(cache.store(key, source))
    walk = tqdm(block_linears(model), desc="compress", disable=not progress)
    for linears, stats in zip(walk, source, strict=True):
        device = _device(next(iter(linears.values())))
        stats = move_stats(stats, device)
        for name, layer in linears.items():
            compressor.compress(name, layer, config, stats[name])
        del stats
    calibration_s = plan_s + (0.0 if from_cache else source.seconds)
    return compressor.result(start, calibration_s, from_cache)


def fused_tensor_scales(model: nn.Module) -> dict[str, float]:
    """One NVFP4 tensor scale per group of layers that read the same input (q/k/v, gate/up),
    fitted on their weights before any is compressed, by layer name: vLLM serves each such group
    as one matrix with one tensor scale (the largest of the checkpoint's, were they to differ),
    so they must share it for the weights served to be the ones evaluated."""
    linears = compressible_linears(model)
    return {
        name: scale
        for group in shared_input_groups(model)
        for scale in [shared_tensor_scale([linears[n].weight for n in group])]
        for name in group
    }


def _layer_plan(
    model: nn.Module,
    config: CompressionConfig,
    calibration: torch.Tensor,
    cache: CalibrationCache | None,
    key: str | None,
    hessian: bool,
    batch_size: int,
    progress: bool,
) -> dict[str, tuple[float, int]]:
    """Each layer's (sparsity, bits) under a non-uniform ``config``, from the base model (which
    ``model`` still is). What the plan reads is measured once and kept beside the cache entry;
    measuring it fills the entry first, so a trial reads the statistics of the cache from then
    on."""
    config = config.canonical()  # what has no effect is neither measured nor planned
    linears = block_linears(model)
    stored = None if cache is None or key is None else cache.read_profile(key)
    profile = empty_profile(linears) if stored is None else LayerProfile.from_dict(stored)
    changed = False
    if config.allocation == "mixed" and profile.fused is None:
        profile.fused = fused_groups(model)  # one forward of two tokens
        changed = True
    if any(profile.missing(config)):
        if cache is not None and key is not None:
            if not cache.has(key, hessian):
                cache.put(key, block_stats(model, calibration, hessian, batch_size, progress))
            source = cache.blocks(key)
        else:
            source = block_stats(model, calibration, hessian, batch_size, progress)
        measure_profile(profile, linears, source, config)
        changed = True
    if changed and cache is not None and key is not None:
        cache.write_profile(key, profile.to_dict())
    return layer_plan(config, profile)


def _compress_sequential(
    model: nn.Module,
    config: CompressionConfig,
    calibration: torch.Tensor,
    hessian: bool,
    batch_size: int,
    compressor: _InPlaceCompressor,
) -> float:
    """Calibrate each block on the compressed blocks before it; returns the calibration time."""
    t = time.perf_counter()
    calls = capture_block_inputs(model, calibration, batch_size)
    calibration_s = time.perf_counter() - t
    for block, linears in zip(find_blocks(model), block_linears(model), strict=True):
        t = time.perf_counter()
        with StatsCollector(linears, hessian) as collector:
            _run_block(block, calls, collector, keep=False)
        stats = collector.result()
        calibration_s += time.perf_counter() - t
        for name, layer in linears.items():
            compressor.compress(name, layer, config, stats[name])
        del stats
        t = time.perf_counter()
        _run_block(block, calls, None, keep=True)  # the compressed block feeds the next
        calibration_s += time.perf_counter() - t
    return calibration_s
