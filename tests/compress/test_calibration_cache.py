"""Faults of the calibration cache on disk: a block truncated or changed, a disk that fills while
an entry is written, a writer killed mid-entry. Each time the next trial recomputes the entry,
and the statistics it uses are those of a fresh computation."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from sweep.compress.calibration import (
    STALE_AGE_S,
    CacheCorrupt,
    CacheDiskFull,
    Calibration,
    CalibrationCache,
    calibration_key,
)
from sweep.compress.driver import block_stats, collect_stats, compressible_linears
from sweep.errors import disk_full, disk_full_message
from sweep.loaded_model import LoadedModel
from sweep.model import load_model
from sweep.trial import TrialRunner

from .test_driver import GPTQ_SPARSEGPT, tiny_llama

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def calibration():
    return torch.randint(0, 96, (6, 24), generator=torch.Generator().manual_seed(1))


def _filled(folder: Path, calibration: torch.Tensor) -> tuple[CalibrationCache, str, Path]:
    model = tiny_llama()
    key = calibration_key(model, calibration)
    cache = CalibrationCache(folder)
    cache.put(key, block_stats(model, calibration))
    return cache, key, folder / key


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside a tensor's bytes: torch.load would not notice
    path.write_bytes(bytes(data))


def _assert_equal_stats(a, b) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name].hessian, b[name].hessian), name
        assert torch.equal(a[name].sq_norms, b[name].sq_norms), name
        assert a[name].n_samples == b[name].n_samples


def test_an_entry_records_the_size_and_digest_of_each_block(tmp_path, calibration):
    _, key, entry = _filled(tmp_path, calibration)
    manifest = json.loads((entry / "complete.json").read_text())
    assert [f["name"] for f in manifest["files"]] == ["block-0000.pt", "block-0001.pt"]
    for f in manifest["files"]:
        assert f["size"] == (entry / f["name"]).stat().st_size and len(f["sha256"]) == 64
    assert sorted(p.name for p in entry.iterdir()) == [
        "block-0000.pt", "block-0001.pt", "complete.json"]  # fmt: skip


def test_a_truncated_block_is_found_before_any_block_is_used(tmp_path, calibration):
    cache, key, entry = _filled(tmp_path, calibration)
    block = entry / "block-0001.pt"
    block.write_bytes(block.read_bytes()[:1000])
    blocks = cache.blocks(key)
    with pytest.raises(CacheCorrupt) as caught:
        next(blocks)
    assert str(caught.value) == (
        f"calibration cache entry {entry} is damaged: block-0001.pt holds 1,000 bytes where "
        f"{json.loads((entry / 'complete.json').read_text())['files'][1]['size']:,} were written"
    )
    assert caught.value.key == key


@pytest.mark.parametrize(
    ("damage", "says"),
    [(_flip_a_byte, "holds other bytes than were written"), (Path.unlink, "is missing")],
    ids=["corrupted", "missing"],
)
def test_a_damaged_block_is_found_before_it_is_loaded(tmp_path, calibration, damage, says):
    cache, key, entry = _filled(tmp_path, calibration)
    if damage is Path.unlink:
        damage(entry / "block-0001.pt")
        with pytest.raises(CacheCorrupt, match=f"block-0001.pt {says}"):
            list(cache.blocks(key))
        return
    damage(entry / "block-0001.pt")
    blocks = cache.blocks(key)
    assert next(blocks)  # the first block is whole, and used
    with pytest.raises(CacheCorrupt, match=f"entry {entry} is damaged: block-0001.pt {says}"):
        next(blocks)


def _runner(toy_dir: Path, calibration: torch.Tensor, cache: CalibrationCache) -> TrialRunner:
    """A runner of the toy model (a Llama as small as ``tiny_llama``) that only compresses."""
    model, tokenizer = load_model(toy_dir / "model")
    cal = Calibration(calibration % model.config.vocab_size, cache=cache)
    return TrialRunner(LoadedModel(model, tokenizer), None, cal, progress=False)


def _weights(model):
    return {n: m.weight.detach().clone() for n, m in compressible_linears(model).items()}


@pytest.mark.parametrize("damage", ["truncate", "corrupt"])
def test_a_trial_drops_a_damaged_entry_and_recomputes_it_from_scratch(
    toy_dir, tmp_path, calibration, damage
):
    notes: list[str] = []
    cache = CalibrationCache(tmp_path, notes.append)
    runner = _runner(toy_dir, calibration, cache)
    first = runner.compress(GPTQ_SPARSEGPT)
    assert not first.stats_from_cache
    expected = _weights(runner.loaded.model)
    runner.loaded.restore()  # the base model: its key, and its statistics computed afresh
    ids = runner.calibration.token_ids
    key, fresh = calibration_key(runner.loaded.model, ids), collect_stats(runner.loaded.model, ids)

    block = tmp_path / key / "block-0001.pt"
    if damage == "truncate":
        block.write_bytes(block.read_bytes()[:-10])
    else:
        _flip_a_byte(block)  # found after block 0 was compressed: the trial starts again
    again = runner.compress(GPTQ_SPARSEGPT)
    assert len(notes) == 1 and "\n" not in notes[0]
    assert notes[0].startswith(f"calibration cache entry {tmp_path / key} is damaged: block-0001")
    assert notes[0].endswith("; dropped it, computing its statistics again")
    assert not again.stats_from_cache and again.calibration_s > 0
    assert all(torch.equal(w, expected[n]) for n, w in _weights(runner.loaded.model).items())
    stored = CalibrationCache(tmp_path).get(key)  # the new entry is whole, and fresh
    assert stored is not None
    _assert_equal_stats(stored, fresh)
    third = runner.compress(GPTQ_SPARSEGPT)
    assert third.stats_from_cache and len(notes) == 1
    assert all(torch.equal(w, expected[n]) for n, w in _weights(runner.loaded.model).items())


@pytest.mark.parametrize(
    "manifest",
    ['{"layout": 2, "blocks": 2, "hessian": true}', '{"layout": 3, "blo'],
    ids=["older-layout", "truncated-manifest"],
)
def test_an_entry_without_checksums_is_recomputed(tmp_path, calibration, manifest):
    cache, key, entry = _filled(tmp_path, calibration)
    (entry / "complete.json").write_text(manifest)
    _flip_a_byte(entry / "block-0000.pt")
    assert not cache.has(key)
    model = tiny_llama()
    fresh = collect_stats(model, calibration)
    cache.put(key, block_stats(model, calibration))
    stored = cache.get(key)
    assert stored is not None
    _assert_equal_stats(stored, fresh)


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB file system (skipped where mounting a tmpfs is not allowed)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_says_what_to_free_and_leaves_nothing_behind(toy_dir, small_disk, calibration):
    cache_dir = small_disk / "cache"
    filler = small_disk / "filler.bin"  # leaves room for one block of an entry, not two
    filler.write_bytes(b"x" * (shutil.disk_usage(small_disk).free - 160 * 1024))
    runner = _runner(toy_dir, calibration, CalibrationCache(cache_dir))
    model = runner.loaded.model
    base = _weights(model)
    with pytest.raises(CacheDiskFull) as caught:
        runner.compress(GPTQ_SPARSEGPT)
    said = str(caught.value)
    assert said.startswith(f"no space left on the disk for the calibration cache {cache_dir} (")
    assert "free): it holds 0 bytes in 0 entries, " in said
    assert "the entry being written had reached 1" in said and "calibration.cache_dir" in said
    assert disk_full(caught.value) and "\n" not in said
    assert disk_full_message(caught.value) == f"{said}; complete trials are kept"
    assert list(cache_dir.iterdir()) == []  # the half-written entry is gone
    runner.loaded.restore()
    assert all(torch.equal(w, base[n]) for n, w in _weights(model).items())

    filler.unlink()  # space freed: the next trial fills the cache
    result = runner.compress(GPTQ_SPARSEGPT)
    assert not result.stats_from_cache
    assert runner.compress(GPTQ_SPARSEGPT).stats_from_cache


WRITER = textwrap.dedent(
    """
    import sys, time, torch
    from sweep.compress.calibration import CalibrationCache, LayerStats

    def blocks():
        for _ in range(3):
            yield {"layer": LayerStats(torch.eye(64), torch.ones(64), 8)}

    for _ in CalibrationCache(sys.argv[1]).store("ab" * 32, blocks()):
        print("block written", flush=True)
        time.sleep(600)  # killed here, one block into the entry
    """
)


def _temporary(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_a_writer_killed_mid_entry_leaves_nothing_once_the_cache_is_opened(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], env=env,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "block written\n"
        (left,) = _temporary(tmp_path)
        notes: list[str] = []
        CalibrationCache(tmp_path, notes.append)  # its writer is alive: kept
        assert left.is_dir() and notes == []
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    finally:
        writer.kill()
    assert left.is_dir() and (left / "block-0000.pt").is_file()  # what kill -9 leaves
    cache = CalibrationCache(tmp_path, notes.append)
    assert _temporary(tmp_path) == [] and not cache.has("ab" * 32)
    assert len(notes) == 1 and "removed 1 temporary entry" in notes[0], notes
    assert "left by processes that are gone" in notes[0]


def test_temporary_entries_of_other_machines_are_removed_only_when_long_untouched(tmp_path):
    fresh, old, unowned = (tmp_path / f".{'c' * 16}-{n}.tmp" for n in ("fresh", "old", "x"))
    for folder in (fresh, old):
        folder.mkdir()
        owner = {"machine": "another-host boot ns", "pid": 1, "start": 0}
        (folder / "owner.json").write_text(json.dumps(owner))
        (folder / "block-0000.pt").write_bytes(b"x" * 10)
    unowned.mkdir()  # an older version's temporary entry says nothing of its writer
    long_ago = time.time() - STALE_AGE_S - 60
    for path in (old / "owner.json", old / "block-0000.pt", old, unowned):
        os.utime(path, (long_ago, long_ago))
    CalibrationCache(tmp_path)
    assert sorted(_temporary(tmp_path)) == [fresh]


def test_a_live_writer_in_this_process_keeps_its_temporary_entry(tmp_path, calibration):
    model = tiny_llama()
    key = calibration_key(model, calibration)
    writing = CalibrationCache(tmp_path).store(key, block_stats(model, calibration))
    next(writing)
    (left,) = _temporary(tmp_path)
    other = CalibrationCache(tmp_path)  # another trial opens the cache meanwhile
    assert left.is_dir() and not other.has(key)
    for _ in writing:
        pass
    assert _temporary(tmp_path) == [] and other.has(key, hessian=True)


def test_the_same_weights_in_another_folder_find_their_statistics(tmp_path, calibration):
    """The key names the weights' content: a model copied to another folder (another mount on a
    GPU node) reads the entry its first folder wrote, with no forward pass."""
    from sweep.compress import CompressionConfig, compress_model
    from sweep.compress.calibration import legacy_calibration_key

    from .test_driver import ForwardCounter

    first, second = tmp_path / "a" / "m", tmp_path / "b" / "m"
    tiny_llama().save_pretrained(first)
    shutil.copytree(first, second)
    from transformers import AutoModelForCausalLM

    model_a = AutoModelForCausalLM.from_pretrained(first, dtype=torch.float32)
    model_b = AutoModelForCausalLM.from_pretrained(second, dtype=torch.float32)
    assert calibration_key(model_a, calibration) == calibration_key(model_b, calibration)
    assert legacy_calibration_key(model_a, calibration) != legacy_calibration_key(
        model_b, calibration
    )  # the old key named the folder: the second one recomputed
    assert calibration_key(model_a.to(torch.bfloat16), calibration) != calibration_key(
        model_b, calibration
    )  # statistics computed in another dtype are other statistics

    config = CompressionConfig(bits=4, quant_method="gptq", group_size=32)
    model_a = AutoModelForCausalLM.from_pretrained(first, dtype=torch.float32)
    compress_model(model_a, config, False, calibration=Calibration(
        calibration, cache=CalibrationCache(tmp_path / "cache")))  # fmt: skip
    counter = ForwardCounter(model_b)
    again = compress_model(model_b, config, False, calibration=Calibration(
        calibration, cache=CalibrationCache(tmp_path / "cache")))  # fmt: skip
    assert again.stats_from_cache and counter.calls == 0


def test_an_entry_written_under_the_old_key_is_adopted_once(tmp_path, calibration):
    from sweep.compress import CompressionConfig, compress_model
    from sweep.compress.calibration import legacy_calibration_key

    from .test_driver import ForwardCounter

    model = tiny_llama()
    old, new = legacy_calibration_key(model, calibration), calibration_key(model, calibration)
    assert old != new
    notes: list[str] = []
    cache = CalibrationCache(tmp_path, note=notes.append)
    cache.put(old, block_stats(model, calibration))  # as an earlier version wrote it
    counter = ForwardCounter(model)
    config = CompressionConfig(bits=4, quant_method="gptq", group_size=32)
    result = compress_model(model, config, False, calibration=Calibration(calibration, cache=cache))
    assert result.stats_from_cache and counter.calls == 0
    assert (tmp_path / new).is_dir() and not (tmp_path / old).exists()
    assert len(notes) == 1 and "now keyed by the weights' content" in notes[0]
    assert not cache.adopt(new, old)  # once
