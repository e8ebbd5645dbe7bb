"""Calibration statistics of each Linear's inputs: how they are collected, and their cache.

In "cached" mode the statistics are those of the *base* model (every block fed the base
model's activations), so they do not depend on the trial's config: a ``CalibrationCache`` keeps
them per (model, calibration set), block by block on disk (or in memory), and later trials run no
calibration forward pass at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
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
    """Per-layer statistics of base models by ``calibration_key``, block by block.

    With ``folder``, an entry is a folder ``<key>/`` holding one file per block
    (``block-0000.pt``, ...) and ``complete.json``; it is written once, block by block as the
    statistics are collected, under a temporary name renamed when complete (so a reader never
    sees half an entry, and of two workers filling it at once one wins). A trial reads it back in
    block order (``blocks``), holding one block's statistics while the kernel reads the next
    block's file ahead: the memory it takes is that of one block, not of the model. Without
    ``folder`` entries are kept in memory, whole (for tests and one-off calls).
    """

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = None if folder is None else Path(folder)
        self._memory: dict[str, list[dict[str, LayerStats]]] = {}
        self._profiles: dict[str, dict] = {}

    def _entry(self, key: str) -> Path:
        assert self.folder is not None
        return self.folder / key

    def _manifest(self, key: str) -> dict | None:
        if key in self._memory:
            blocks = self._memory[key]
            hessian = all(s.hessian is not None for b in blocks for s in b.values())
            return {"blocks": len(blocks), "hessian": hessian}
        if self.folder is None:
            return None
        path = self._entry(key) / "complete.json"
        if not path.is_file():
            return None
        manifest = json.loads(path.read_text())
        return manifest if manifest.get("layout") == CACHE_LAYOUT else None

    def has(self, key: str, hessian: bool = False) -> bool:
        """Whether the entry ``key`` is complete (and holds Hessians, when ``hessian``)."""
        manifest = self._manifest(key)
        return manifest is not None and (manifest["hessian"] or not hessian)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.has(key)

    def blocks(self, key: str) -> Iterator[dict[str, LayerStats]]:
        """The entry's statistics, one block at a time in block order. While the caller works on
        a block, the next block's file is read ahead into the operating system's page cache,
        not into this process: only one block's statistics are ever held here."""
        if key in self._memory:
            yield from self._memory[key]
            return
        manifest = self._manifest(key)
        if manifest is None:
            raise KeyError(f"no complete calibration cache entry {key}")
        paths = [self._entry(key) / _block_name(i) for i in range(manifest["blocks"])]
        for i, path in enumerate(paths):
            stats = _load_block(path)
            if i + 1 < len(paths):
                _read_ahead(paths[i + 1])
            yield stats
            del stats

    def store(
        self, key: str, blocks: Iterable[dict[str, LayerStats]]
    ) -> Iterator[dict[str, LayerStats]]:
        """Pass ``blocks`` through, writing each to the entry ``key`` as it goes by; the entry
        is complete (and visible) once the last block has gone by."""
        if self.folder is None:
            kept = []
            for stats in blocks:
                kept.append(move_stats(stats, "cpu"))
                yield stats
            self._memory[key] = kept
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.folder, prefix=f".{key[:16]}-", suffix=".tmp"))
        try:
            hessian, n = True, 0
            for n, stats in enumerate(blocks, start=1):
                _save_block(stats, tmp / _block_name(n - 1))
                hessian = hessian and all(s.hessian is not None for s in stats.values())
                yield stats
            manifest = {"layout": CACHE_LAYOUT, "blocks": n, "hessian": hessian}
            (tmp / "complete.json").write_text(json.dumps(manifest))
            target = self._entry(key)
            if target.exists():  # an incomplete or older entry, or one another worker wrote
                if self.has(key, hessian):
                    return
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)

    def put(self, key: str, blocks: Iterable[dict[str, LayerStats]]) -> None:
        """Store an entry whole."""
        for _ in self.store(key, blocks):
            pass

    def get(self, key: str) -> dict[str, LayerStats] | None:
        """The whole entry as one mapping (every block in memory: for small models and tests),
        or None."""
        if not self.has(key):
            return None
        out: dict[str, LayerStats] = {}
        for stats in self.blocks(key):
            out.update(stats)
        return out

    def clear(self) -> None:
        """Forget the in-memory entries (entries on disk stay)."""
        self._memory.clear()
        self._profiles.clear()

    def read_profile(self, key: str) -> dict | None:
        """The layer profile kept beside the entry ``key`` (``LayerProfile.to_dict``), if any."""
        if self.folder is None:
            return self._profiles.get(key)
        path = self._entry(key) / PROFILE_FILE
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def write_profile(self, key: str, profile: dict) -> None:
        """Keep ``profile`` beside the complete entry ``key`` (replaced whole, atomically)."""
        if self.folder is None:
            self._profiles[key] = profile
            return
        entry = self._entry(key)
        if not self.has(key):
            raise KeyError(f"no complete calibration cache entry {key}")
        fd, tmp = tempfile.mkstemp(dir=entry, prefix=".profile-", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(profile, f)
        os.replace(tmp, entry / PROFILE_FILE)


CACHE_LAYOUT = 2  # one file a block (layout 1, one file for the whole model, is not read)
PROFILE_FILE = "profile.json"  # per-layer facts of non-uniform configs (sweep.compress.profile)


def _block_name(index: int) -> str:
    return f"block-{index:04d}.pt"


def _read_ahead(path: Path) -> None:
    """Ask the kernel to start reading ``path`` into its page cache (returns at once)."""
    if not hasattr(os, "posix_fadvise"):
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    finally:
        os.close(fd)


def _save_block(stats: dict[str, LayerStats], path: Path) -> None:
    layers = {
        n: {"hessian": s.hessian, "sq_norms": s.sq_norms, "n_samples": s.n_samples}
        for n, s in move_stats(stats, "cpu").items()
    }
    torch.save(layers, path)  # layers that share a LayerStats share its tensors in the file


def _load_block(path: Path) -> dict[str, LayerStats]:
    layers = torch.load(path, map_location="cpu", weights_only=True)
    shared: dict[int, LayerStats] = {}  # layers saved with one tensor get one LayerStats
    return {
        n: shared.setdefault(id(fields["sq_norms"]), LayerStats(**fields))
        for n, fields in layers.items()
    }
