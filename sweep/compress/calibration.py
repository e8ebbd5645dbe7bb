"""Calibration statistics of each Linear's inputs: how they are collected, and their cache.

In "cached" mode the statistics are those of the *base* model (every block fed the base
model's activations), so they do not depend on the trial's config: a ``CalibrationCache`` keeps
them per (model, calibration set), in memory and optionally on disk, and later trials run no
calibration forward pass at all.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sweep.compress.hessian import accumulate_hessian, accumulate_sq_norms

FORMAT_VERSION = 1


@dataclass
class LayerStats:
    """Statistics of one Linear's inputs over the calibration tokens."""

    hessian: torch.Tensor | None  # (in, in): mean of 2 x x^T; None when not collected
    sq_norms: torch.Tensor  # (in,): mean of x_j^2 per input feature (Wanda)
    n_samples: int  # calibration tokens seen


def move_stats(stats: dict[str, LayerStats], device: torch.device | str) -> dict[str, LayerStats]:
    """``stats`` on ``device``; layers that shared one LayerStats still share one."""
    moved: dict[int, LayerStats] = {}
    out = {}
    for name, s in stats.items():
        if id(s) not in moved:
            h = None if s.hessian is None else s.hessian.to(device)
            moved[id(s)] = LayerStats(h, s.sq_norms.to(device), s.n_samples)
        out[name] = moved[id(s)]
    return out


class StatsCollector:
    """Forward hooks on Linear layers that accumulate each one's ``LayerStats``.

    Layers fed the very same input tensor (q/k/v, gate/up) share one LayerStats, found on the
    first batch: they are computed and stored once. Call ``end_batch()`` after each forward.
    """

    def __init__(self, linears: dict[str, nn.Linear], hessian: bool) -> None:
        self._hessian = hessian
        self._acc: dict[str, tuple[torch.Tensor | None, torch.Tensor | None, int]] = {}
        self._alias: dict[str, str] = {}
        self._batch_inputs: dict[int, tuple[torch.Tensor, str]] = {}
        self._first_batch = True
        self._names = list(linears)
        self._handles = [m.register_forward_hook(self._hook(n)) for n, m in linears.items()]

    def _hook(self, name: str):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            x = args[0]  # (..., in)
            if self._first_batch:
                seen = self._batch_inputs.get(id(x))
                if seen is not None and seen[0] is x and seen[1] != name:
                    self._alias[name] = seen[1]
                else:
                    self._batch_inputs[id(x)] = (x, name)
            if name in self._alias:
                return
            h, sq, n = self._acc.get(name, (None, None, 0))
            if self._hessian:
                h, _ = accumulate_hessian(h, x, n)
            sq, n = accumulate_sq_norms(sq, x, n)
            self._acc[name] = (h, sq, n)

        return hook

    def end_batch(self) -> None:
        self._first_batch = False
        self._batch_inputs.clear()

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._batch_inputs.clear()

    def __enter__(self) -> StatsCollector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def result(self) -> dict[str, LayerStats]:
        """Each layer's statistics (aliased layers map to the same object)."""
        leaders = {n: LayerStats(h, sq, k) for n, (h, sq, k) in self._acc.items()}
        missing = [n for n in self._names if n not in leaders and n not in self._alias]
        if missing:
            raise RuntimeError(f"no calibration input reached {missing}")
        return {n: leaders[self._alias.get(n, n)] for n in self._names}


def model_fingerprint(model: nn.Module) -> str:
    """sha256 naming a model's weights: its name and config, and a strided sample of every
    parameter (256 values each), cheap enough to compute for a 8B model."""
    digest = hashlib.sha256(f"sweep-model-v{FORMAT_VERSION}".encode())
    config = getattr(model, "config", None)
    if config is not None:
        digest.update(str(getattr(config, "_name_or_path", "")).encode())
        digest.update(config.to_json_string(use_diff=False).encode())
    for name, p in model.named_parameters():
        flat = p.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 256)][:256].float().cpu()
        digest.update(f"{name}:{tuple(p.shape)}:{p.dtype}".encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()


def calibration_key(model: nn.Module, calibration: torch.Tensor) -> str:
    """sha256 naming (model, calibration set): the model's fingerprint and the token ids."""
    digest = hashlib.sha256(f"sweep-calibration-v{FORMAT_VERSION}".encode())
    digest.update(model_fingerprint(model).encode())
    ids = calibration.detach().to("cpu", torch.int64).contiguous()
    digest.update(str(tuple(ids.shape)).encode())
    digest.update(ids.numpy().tobytes())
    return digest.hexdigest()


class CalibrationCache:
    """Per-layer statistics of base models by ``calibration_key``, on the CPU.

    With ``folder`` each entry is also written there (``<key>.pt``, by ``torch.save``) and read
    back by any later process that asks for the same key.
    """

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = None if folder is None else Path(folder)
        self._memory: dict[str, dict[str, LayerStats]] = {}

    def _path(self, key: str) -> Path | None:
        return None if self.folder is None else self.folder / f"{key}.pt"

    def get(self, key: str) -> dict[str, LayerStats] | None:
        """The statistics stored under ``key`` (memory first, then disk), or None."""
        if key in self._memory:
            return self._memory[key]
        path = self._path(key)
        if path is None or not path.is_file():
            return None
        data = torch.load(path, map_location="cpu", weights_only=True)
        if data.get("version") != FORMAT_VERSION:
            return None
        shared: dict[int, LayerStats] = {}  # layers saved with one tensor get one LayerStats
        stats = {
            n: shared.setdefault(id(fields["sq_norms"]), LayerStats(**fields))
            for n, fields in data["layers"].items()
        }
        self._memory[key] = stats
        return stats

    def put(self, key: str, stats: dict[str, LayerStats]) -> None:
        """Store ``stats`` (moved to the CPU) under ``key``; written atomically to disk if asked."""
        stats = move_stats(stats, "cpu")
        self._memory[key] = stats
        path = self._path(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        layers = {
            n: {"hessian": s.hessian, "sq_norms": s.sq_norms, "n_samples": s.n_samples}
            for n, s in stats.items()
        }
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        try:
            torch.save({"version": FORMAT_VERSION, "layers": layers}, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def clear(self) -> None:
        """Forget the in-memory entries (files on disk stay)."""
        self._memory.clear()
