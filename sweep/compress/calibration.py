"""Calibration statistics of each Linear's inputs: how they are collected, and their cache.

In "cached" mode the statistics are those of the *base* model (every block fed the base
model's activations), so they do not depend on the trial's config: a ``CalibrationCache`` keeps
them per (model, calibration set), block by block on disk (or in memory), and later trials run no
calibration forward pass at all.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sweep.compress.hessian import accumulate_hessian, accumulate_sq_norms
from sweep.errors import DiskFullError, UserError, disk_full
from sweep.weights_fingerprint import weights_fingerprint

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


MODES = ("cached", "sequential")


@dataclass(frozen=True)
class Calibration:
    """Calibration token ids (samples, seq_len) and how the engine uses them.

    ``mode``: "cached" collects the base model's statistics block by block (read from ``cache``
    when it holds them for this model and these ids, stored there otherwise); "sequential"
    feeds each block the outputs of the blocks already compressed (statistics computed for this
    call only). ``batch_size`` samples go through the model at a time."""

    token_ids: torch.Tensor
    mode: str = "cached"
    cache: CalibrationCache | None = None
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        ids = self.token_ids
        if ids.dim() != 2 or ids.is_floating_point() or ids.numel() == 0:
            raise ValueError(
                f"calibration must be integer token ids of shape (samples, seq_len), "
                f"got {tuple(ids.shape)} {ids.dtype}"
            )


def legacy_model_fingerprint(model: nn.Module) -> str:
    """How cache keys named a model before they were made from its content alone: its name or
    folder, its config, and a strided sample of every parameter (256 values each). Read only to
    find entries written then (``CalibrationCache.adopt``)."""
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
    """sha256 naming (model, calibration set) by content: the weights' fingerprint
    (``sweep.weights_fingerprint``, whatever folder they were loaded from), the dtypes
    the statistics are computed in, and the token ids."""
    digest = hashlib.sha256(f"sweep-calibration-v{FORMAT_VERSION}-content".encode())
    digest.update(weights_fingerprint(model).encode())
    digest.update(",".join(sorted({str(p.dtype) for p in model.parameters()})).encode())
    _digest_ids(digest, calibration)
    return digest.hexdigest()


def legacy_calibration_key(model: nn.Module, calibration: torch.Tensor) -> str:
    """The key an entry for (model, calibration set) had before keys were made from content
    alone (it named the model's folder): kept to adopt such entries."""
    digest = hashlib.sha256(f"sweep-calibration-v{FORMAT_VERSION}".encode())
    digest.update(legacy_model_fingerprint(model).encode())
    _digest_ids(digest, calibration)
    return digest.hexdigest()


def _digest_ids(digest, calibration: torch.Tensor) -> None:
    ids = calibration.detach().to("cpu", torch.int64).contiguous()
    digest.update(str(tuple(ids.shape)).encode())
    digest.update(ids.numpy().tobytes())


class CacheCorrupt(UserError):
    """A block file of a complete cache entry that is not what was written (shorter, other
    bytes, missing, unreadable): the entry is to be dropped and computed again."""

    def __init__(self, key: str, entry: Path, block: str, what: str) -> None:
        super().__init__(f"calibration cache entry {entry} is damaged: {block} {what}")
        self.key = key


class CacheDiskFull(DiskFullError):
    """The cache's disk filled while an entry was written (what was written of it is removed)."""


class CalibrationCache:
    """Per-layer statistics of base models by ``calibration_key``, block by block.

    With ``folder``, an entry is a folder ``<key>/`` holding one file per block
    (``block-0000.pt``, ...) and ``complete.json``, which records each file's size and sha256;
    it is written once, block by block as the statistics are collected, under a temporary name
    renamed when complete (so a reader never sees half an entry, and of two workers filling it at
    once one wins). A trial reads it back in block order (``blocks``), holding one block's
    statistics while a thread reads the next block's file and checks its digest (which also
    brings it into the operating system's page cache): the memory it takes is that of one block,
    not of the model, and a damaged file raises ``CacheCorrupt`` before it is loaded. Without
    ``folder`` entries are kept in memory, whole (for tests and one-off calls).

    A temporary folder says which process writes it (``owner.json``); opening a cache and
    writing an entry remove those left by a process that is gone (``clean_stale``). ``note``
    receives the lines a user should see (an entry dropped, folders removed).
    """

    def __init__(
        self, folder: str | Path | None = None, note: Callable[[str], None] | None = None
    ) -> None:
        self.folder = None if folder is None else Path(folder)
        self.note: Callable[[str], None] = note or (lambda text: None)
        self._memory: dict[str, list[dict[str, LayerStats]]] = {}
        self._profiles: dict[str, dict] = {}
        if self.folder is not None and self.folder.is_dir():
            self.clean_stale()

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
        try:
            manifest = json.loads((self._entry(key) / COMPLETE_FILE).read_text())
        except (OSError, ValueError):  # no entry, or a manifest that is not one: not complete
            return None
        if not isinstance(manifest, dict) or manifest.get("layout") != CACHE_LAYOUT:
            return None
        files = manifest.get("files")
        return manifest if isinstance(files, list) and len(files) == manifest["blocks"] else None

    def has(self, key: str, hessian: bool = False) -> bool:
        """Whether the entry ``key`` is complete (and holds Hessians, when ``hessian``)."""
        manifest = self._manifest(key)
        return manifest is not None and (manifest["hessian"] or not hessian)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.has(key)

    def blocks(self, key: str) -> Iterator[dict[str, LayerStats]]:
        """The entry's statistics, one block at a time in block order; only one block's
        statistics are ever held here. Every file's size is checked first and each file's
        sha256 before it is loaded (the next one's while the caller works on a block): a
        damaged entry raises ``CacheCorrupt``, possibly after some blocks were yielded."""
        if key in self._memory:
            yield from self._memory[key]
            return
        manifest = self._manifest(key)
        if manifest is None:
            raise KeyError(f"no complete calibration cache entry {key}")
        files: list[dict] = manifest["files"]
        for written in files:
            self._check_size(key, written)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sweep-cache") as pool:
            checked = pool.submit(self._check_digest, key, files[0]) if files else None
            for i, written in enumerate(files):
                assert checked is not None
                checked.result()
                if i + 1 < len(files):
                    checked = pool.submit(self._check_digest, key, files[i + 1])
                stats = self._load(key, written)
                yield stats
                del stats

    def _damaged(self, key: str, written: dict, what: str) -> CacheCorrupt:
        return CacheCorrupt(key, self._entry(key), written["name"], what)

    def _check_size(self, key: str, written: dict) -> None:
        try:
            size = (self._entry(key) / written["name"]).stat().st_size
        except FileNotFoundError:
            raise self._damaged(key, written, "is missing") from None
        if size != written["size"]:
            raise self._damaged(
                key, written, f"holds {size:,} bytes where {written['size']:,} were written"
            )

    def _check_digest(self, key: str, written: dict) -> None:
        try:
            digest = _file_digest(self._entry(key) / written["name"])
        except OSError as err:
            raise self._damaged(key, written, f"cannot be read ({err.strerror})") from None
        if digest != written["sha256"]:
            raise self._damaged(key, written, "holds other bytes than were written (sha256)")

    def _load(self, key: str, written: dict) -> dict[str, LayerStats]:
        try:
            return _load_block(self._entry(key) / written["name"])
        except Exception as err:  # torch.load's errors have no common type
            said = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise self._damaged(
                key, written, f"cannot be loaded ({type(err).__name__}: {said})"
            ) from None

    def drop(self, key: str) -> None:
        """Remove the entry ``key`` (with its profile), as one rename: a later trial computes
        it again."""
        self._memory.pop(key, None)
        self._profiles.pop(key, None)
        if self.folder is None:
            return
        gone = self.folder / f".{key[:16]}-dropped-{uuid.uuid4().hex[:8]}.tmp"
        try:
            os.replace(self._entry(key), gone)
        except FileNotFoundError:  # dropped by another worker already
            return
        shutil.rmtree(gone, ignore_errors=True)

    def store(
        self, key: str, blocks: Iterable[dict[str, LayerStats]]
    ) -> Iterator[dict[str, LayerStats]]:
        """Pass ``blocks`` through, writing each to the entry ``key`` as it goes by; the entry
        is complete (and visible) once the last block has gone by. A full disk raises
        ``CacheDiskFull``, nothing of the entry left behind."""
        if self.folder is None:
            kept = []
            for stats in blocks:
                kept.append(move_stats(stats, "cpu"))
                yield stats
            self._memory[key] = kept
            return
        with self._writing(None):
            self.folder.mkdir(parents=True, exist_ok=True)
        self.clean_stale()
        with self._writing(None):
            tmp = Path(tempfile.mkdtemp(dir=self.folder, prefix=f".{key[:16]}-", suffix=".tmp"))
        try:
            with self._writing(tmp):
                (tmp / OWNER_FILE).write_text(json.dumps(_owner()))
            hessian, files = True, []
            for n, stats in enumerate(blocks):
                with self._writing(tmp):
                    files.append(_save_block(stats, tmp / _block_name(n)))
                hessian = hessian and all(s.hessian is not None for s in stats.values())
                yield stats
            manifest = {"layout": CACHE_LAYOUT, "blocks": len(files), "hessian": hessian,
                        "files": files}  # fmt: skip
            with self._writing(tmp):
                (tmp / COMPLETE_FILE).write_text(json.dumps(manifest))
            (tmp / OWNER_FILE).unlink()
            target = self._entry(key)
            if target.exists():  # an incomplete or older entry, or one another worker wrote
                if self.has(key, hessian):
                    return
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    @contextmanager
    def _writing(self, tmp: Path | None) -> Iterator[None]:
        """Turn a full disk met in the block into ``CacheDiskFull``, saying what to free."""
        try:
            yield
        except Exception as err:
            if not disk_full(err):
                raise
            raise CacheDiskFull(self._full_message(tmp)) from err

    def _full_message(self, tmp: Path | None) -> str:
        assert self.folder is not None
        written = 0 if tmp is None else _folder_size(tmp)
        held = _folder_size(self.folder) - written
        entries = sum(1 for p in self.folder.iterdir() if p.is_dir() and p.name[0] != ".")
        free = shutil.disk_usage(self.folder).free
        return (
            f"no space left on the disk for the calibration cache {self.folder.resolve()} "
            f"({_shown_size(free)} free): it holds {_shown_size(held)} in {entries} entries, "
            f"and the entry being written had reached {_shown_size(written)}; free space on "
            "that disk (an entry of a model or calibration set no study uses can be deleted) or "
            "set calibration.cache_dir to a larger one"
        )

    def clean_stale(self) -> None:
        """Remove the temporary entries whose writer is gone: a process of this machine that
        no longer runs or, where the writer cannot be asked (another machine; a folder that does
        not say), one untouched for ``STALE_AGE_S``. A writer touches its folder at every block,
        so a live one's folder is never removed."""
        assert self.folder is not None
        try:
            found = [p for p in self.folder.iterdir() if _TEMPORARY.fullmatch(p.name)]
        except OSError:
            return
        removed, freed = 0, 0
        for tmp in found:
            if not tmp.is_dir() or not _abandoned(tmp):
                continue
            size = _folder_size(tmp)
            shutil.rmtree(tmp, ignore_errors=True)
            if not tmp.exists():
                removed, freed = removed + 1, freed + size
        if removed:
            self.note(
                f"calibration cache {self.folder}: removed {removed} temporary "
                f"{'entry' if removed == 1 else 'entries'} ({_shown_size(freed)}) left by "
                "processes that are gone"
            )

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

    def adopt(self, key: str, legacy: str) -> bool:
        """Give the complete entry ``legacy`` (a key of an earlier scheme) the name ``key``, when
        ``key`` has no entry yet: a one-time move, so that statistics computed before keys were
        made from content are found again. Returns whether an entry was moved."""
        if self.folder is None or key == legacy or self.has(key) or not self.has(legacy):
            return False
        try:
            os.rename(self._entry(legacy), self._entry(key))
        except OSError:  # another process adopted it, or wrote ``key``, first
            return False
        self.note(
            f"calibration cache entry {legacy[:12]}... renamed {key[:12]}... (now keyed by "
            "the weights' content, not the model's folder)"
        )
        return True

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
        with self._writing(None):
            fd, tmp = tempfile.mkstemp(dir=entry, prefix=".profile-", suffix=".tmp")
        try:
            with self._writing(None), os.fdopen(fd, "w") as f:
                json.dump(profile, f)
            os.replace(tmp, entry / PROFILE_FILE)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)


CACHE_LAYOUT = 3  # each block's size and sha256 in complete.json (layout 2 had none: recomputed)
COMPLETE_FILE = "complete.json"
PROFILE_FILE = "profile.json"  # per-layer facts of non-uniform configs (sweep.compress.profile)
OWNER_FILE = "owner.json"  # in a temporary entry: the process that writes it
STALE_AGE_S = 24 * 3600.0  # a temporary entry no one can vouch for, untouched this long, is left
_TEMPORARY = re.compile(r"\.[0-9a-f]{16}-.+\.tmp")


def _block_name(index: int) -> str:
    return f"block-{index:04d}.pt"


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()


def _folder_size(folder: Path) -> int:
    total = 0
    for root, _, names in os.walk(folder):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _shown_size(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


@functools.cache
def _machine() -> str:
    """Names the pid namespace this process lives in: host, kernel boot and pid namespace (two
    containers of one host may share a hostname, never a namespace)."""
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    with contextlib.suppress(OSError):
        parts.append(os.readlink("/proc/self/ns/pid"))
    return " ".join(parts)


def _process(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks after boot) of process ``pid``, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return fields[0], int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _owner() -> dict:
    started = _process(os.getpid())
    return {"machine": _machine(), "pid": os.getpid(),
            "start": None if started is None else started[1]}  # fmt: skip


def _running(pid: int, start: int | None) -> bool:
    """Whether the process ``pid`` that started at ``start`` still runs (a pid may be reused)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, under another user
        pass
    seen = _process(pid)
    if seen is None:  # no /proc to ask
        return True
    state, started = seen
    return state != "Z" and (start is None or started == start)


def _abandoned(tmp: Path) -> bool:
    """Whether nobody writes the temporary entry ``tmp`` any more."""
    try:
        owner = json.loads((tmp / OWNER_FILE).read_text())
    except (OSError, ValueError):
        owner = None
    if isinstance(owner, dict) and owner.get("machine") == _machine():
        pid, start = owner.get("pid"), owner.get("start")
        if isinstance(pid, int) and pid > 0 and (start is None or isinstance(start, int)):
            return not _running(pid, start)
    try:
        touched = max(p.stat().st_mtime for p in [tmp, *tmp.iterdir()])
    except OSError:  # removed meanwhile
        return False
    return time.time() - touched > STALE_AGE_S


def _save_block(stats: dict[str, LayerStats], path: Path) -> dict:
    """Write one block's statistics; returns its file's name, size and sha256."""
    layers = {
        n: {"hessian": s.hessian, "sq_norms": s.sq_norms, "n_samples": s.n_samples}
        for n, s in move_stats(stats, "cpu").items()
    }
    with open(path, "wb") as f:  # a full disk then shows as an OSError (ENOSPC), not a pos error
        torch.save(layers, f)  # layers that share a LayerStats share its tensors in the file
    return {"name": path.name, "size": path.stat().st_size, "sha256": _file_digest(path)}


def _load_block(path: Path) -> dict[str, LayerStats]:
    layers = torch.load(path, map_location="cpu", weights_only=True)
    shared: dict[int, LayerStats] = {}  # layers saved with one tensor get one LayerStats
    return {
        n: shared.setdefault(id(fields["sq_norms"]), LayerStats(**fields))
        for n, fields in layers.items()
    }
