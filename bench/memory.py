"""Memory of a worker's trial: peak resident memory against what it must hold.

Each measurement runs in a fresh process, in phases, with the kernel's peak counter (VmHWM)
reset between them (``/proc/self/clear_refs``): loading the model and taking its weight snapshot,
then compressing with GPTQ in cached mode, first filling the calibration cache (the first trial of
a study), then reading it back (every later trial). The target for a trial that reads the cache:
its peak above the memory held before it (the loaded model and its snapshot) is at most one
block's Hessians plus 10% of model + snapshot + block. Figures for Llama-3.1-8B and 70B are
computed from their shapes.

Run: ``make bench-memory`` (``MODEL=smollm2-135m`` for the real small model).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

RESULTS = Path("bench-results")
GiB = 1024**3
# Llama shapes: hidden, intermediate, layers, vocab (q/k/v share one Hessian, gate/up another)
LARGE = {"Llama-3.1-8B": (4096, 14336, 32, 128256), "Llama-3.1-70B": (8192, 28672, 80, 128256)}


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def child(model: str, group_size: int, cache_dir: str) -> dict:
    """One process: load, snapshot, compress once (cached mode); bytes of each phase."""
    from dataclasses import replace

    import torch

    from sweep.compress import CompressionConfig, compress_model
    from sweep.compress.calibration import CalibrationCache, calibration_key
    from sweep.events import Events
    from sweep.spec import load_spec, with_overrides
    from sweep.workers import prepare_runner

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 2))
    spec = with_overrides(load_spec("studies/demo.yaml"), model=model)
    if model == "smollm2-135m":
        spec = load_spec("studies/smollm2-paper.yaml")
    cal = spec.calibration.model_copy(update={"cache_dir": Path(cache_dir)})
    spec = spec.model_copy(update={"calibration": cal})
    before = _status("VmRSS")
    _reset_peak()
    runner = prepare_runner(spec, Events(), progress=False, evaluate=False)
    loaded = _status("VmRSS")
    load_peak = _status("VmHWM")
    config = CompressionConfig(bits=4, quant_method="gptq", group_size=group_size)
    cache = CalibrationCache(cache_dir)
    key = calibration_key(runner.loaded.model, runner.calibration.token_ids)
    filled_before = cache.has(key, hessian=True)
    _reset_peak()
    calibration = replace(runner.calibration, mode="cached", cache=cache)
    result = compress_model(runner.loaded.model, config, False, calibration=calibration)
    peak = _status("VmHWM")
    entry = Path(cache_dir) / key
    block_files = sorted(entry.glob("block-*.pt"))
    weights = sum(p.numel() * p.element_size() for p in runner.loaded.model.parameters())
    snapshot = sum(t.numel() * t.element_size() for t in runner.loaded.snapshot._saved.values())
    return {
        "model": model,
        "from_cache": result.stats_from_cache and filled_before,
        "rss_before_load": before,
        "rss_loaded": loaded,
        "load_peak": load_peak,
        "compress_peak": peak,
        "weights": weights,
        "snapshot": snapshot,
        "cache_on_disk": sum(f.stat().st_size for f in block_files),
        "largest_block": max(f.stat().st_size for f in block_files),
        "blocks": len(block_files),
        "compress_s": result.seconds,
    }


def _run_child(model: str, group_size: int, cache_dir: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "bench.memory", "--child", model, str(group_size), cache_dir],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"measurement failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def large_model_figures() -> list[dict]:
    """Bytes for Llama-3.1 8B and 70B on a GPU in bfloat16, from their shapes."""
    rows = []
    for name, (h, i, layers, vocab) in LARGE.items():
        kv = h // 4  # 8 KV heads of 128 (grouped-query attention: k and v are h/4 wide)
        block_params = h * h * 2 + h * kv * 2 + 3 * h * i
        params = layers * block_params + 2 * vocab * h
        block_hessians = (3 * h * h + i * i) * 4  # q/k/v and gate/up share one each
        rows.append(
            {
                "model": name,
                "weights": params * 2,
                "snapshot": layers * block_params * 2,
                "cache_on_disk": layers * block_hessians,
                "largest_block": block_hessians,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=3, metavar=("MODEL", "GROUP", "CACHE"))
    parser.add_argument("--model", default="sweep/demo/model")
    args = parser.parse_args()
    if args.child:
        model, group, cache = args.child
        print(json.dumps(child(model, int(group), cache)))
        return
    console = Console()
    group = 64 if args.model == "smollm2-135m" else 128
    with tempfile.TemporaryDirectory(prefix="sweep-bench-memory-") as cache:
        first = _run_child(args.model, group, cache)
        later = _run_child(args.model, group, cache)
    rows = []
    for phase, m in (("first trial (fills the cache)", first), ("later trial", later)):
        held = m["rss_loaded"]
        extra = m["compress_peak"] - held
        allowed = m["largest_block"] + 0.10 * (m["weights"] + m["snapshot"] + m["largest_block"])
        rows.append({**m, "phase": phase, "peak_above_loaded": extra, "allowed": allowed})
    table = Table(title=f"memory of a GPTQ trial, {args.model} (MiB)")
    table.add_column("")
    for r in rows:
        table.add_column(r["phase"], justify="right")
    mib = lambda b: f"{b / 2**20:,.1f}"  # noqa: E731
    shown = {
        "weights (loaded)": "weights", "weight snapshot": "snapshot",
        "largest block's statistics": "largest_block", "cache on disk": "cache_on_disk",
        "RSS with model and snapshot": "rss_loaded", "peak above that": "peak_above_loaded",
        "target for that": "allowed",
    }  # fmt: skip
    for label, field in shown.items():
        table.add_row(label, *(mib(r[field]) for r in rows))
    table.add_row("compression seconds", *(f"{r['compress_s']:.1f}" for r in rows))
    console.print(table)
    later_row = rows[1]
    verdict = "meets" if later_row["peak_above_loaded"] <= later_row["allowed"] else "misses"
    console.print(
        f"a later trial's peak is {mib(later_row['peak_above_loaded'])} MiB above the loaded "
        f"model and snapshot, against {mib(later_row['allowed'])} MiB allowed: it {verdict} the "
        "target"
    )
    big = large_model_figures()
    out = Table(title="computed for Llama-3.1 on a GPU, bfloat16 (GiB)")
    for col in ("model", "weights (GPU)", "snapshot (CPU)", "Hessian cache on disk",
                "one block's Hessians"):  # fmt: skip
        out.add_column(col, justify="right")
    for r in big:
        out.add_row(r["model"], *(f"{r[k] / GiB:,.1f}" for k in
                    ("weights", "snapshot", "cache_on_disk", "largest_block")))  # fmt: skip
    console.print(out)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "memory.json"
    kept = json.loads(path.read_text()) if path.exists() else {}
    kept[args.model] = rows
    kept["computed"] = big
    path.write_text(json.dumps(kept, indent=1))


if __name__ == "__main__":
    main()
