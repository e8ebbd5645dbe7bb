"""Where a cached trial's compression time goes: cProfile over ``compress_model`` with a warm
calibration cache, its time grouped into the engine's steps.

Steps: reading the cache (``torch.load`` of a block's statistics), the inverse Hessian's
Cholesky factorisations, rounding onto the grid (``rtn.py``), SparseGPT's mask selection
(``topk``), the kernels' loops (their indexing, rank-1 updates, lazy block products and Python),
and the rest (copies, the driver). A study's
later trials pay exactly this; its first also pays the calibration forward passes, which
``make bench-engine`` reports as the cold time.

Run: ``make bench-profile`` (``MODEL=smollm2-135m``, the default; ``MODEL=demo`` for the demo),
writing ``bench-results/profile-<model>.json``.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from sweep.compress import CompressionConfig
from sweep.events import Events
from sweep.spec import load_spec

RESULTS = Path("bench-results")
SPECS = {"demo": Path("studies/demo.yaml"), "smollm2-135m": Path("studies/smollm2-paper.yaml")}
GROUP = {"demo": 128, "smollm2-135m": 64}
# step -> substrings of cProfile's function labels ("file:line(name)" or "{method 'x' ...}").
# Tensor indexing and the @ and -= operators are C slots that cProfile does not see: they count
# in the caller's own time, so a kernel's own time holds its column loop and its block products.
STEPS = {
    # 'acquire': waiting for the thread that checks the next block's digest
    "read the cache": ("_load_block", "_check_size", "_file_digest", "serialization.py",
                       "_weights_only_unpickler", "posix", "'acquire'"),
    "Cholesky (inverse Hessian)": ("cholesky",),
    "rounding onto the grid": ("rtn.py", "round", "clamp"),
    "mask selection (SparseGPT)": ("topk", "'sort'", "argsort", "scatter", "magnitude.py"),
    "kernel loops (indexing, rank-1 and block updates, Python)": (
        "gptq.py", "sparsegpt.py", "'addr_'", "'div_'", "'mul_'", "'sub_'", "matmul"),
}  # fmt: skip


def configs(model: str) -> dict[str, CompressionConfig]:
    g = GROUP[model]
    return {
        "GPTQ 3-bit": CompressionConfig(bits=3, quant_method="gptq", group_size=g),
        "SparseGPT 50%": CompressionConfig(sparsity=0.5, prune_method="sparsegpt"),
        "SparseGPT 50% + 4-bit joint": CompressionConfig(
            sparsity=0.5, prune_method="sparsegpt", bits=4, group_size=g, order="joint"
        ),
    }


def step_of(label: str) -> str:
    for step, marks in STEPS.items():
        if any(mark in label for mark in marks):
            return step
    return "the rest (copies, the driver)"


def profile_one(runner, config: CompressionConfig) -> tuple[float, dict[str, float]]:
    """Seconds of one cached compression, and its own time (cProfile's tottime) per step."""
    runner.loaded.restore()
    profiler = cProfile.Profile()
    t = time.perf_counter()
    profiler.enable()
    runner.compress(config)
    profiler.disable()
    seconds = time.perf_counter() - t
    shares: dict[str, float] = {}
    for (file, line, name), (_, _, tottime, _, _) in pstats.Stats(profiler).stats.items():  # type: ignore[attr-defined]
        label = f"{file}:{line}({name})" if file != "~" else name
        step = step_of(label)
        shares[step] = shares.get(step, 0.0) + tottime
    return seconds, shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", choices=sorted(SPECS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    from sweep.workers import prepare_runner

    console = Console()
    spec = load_spec(SPECS[args.model])
    runner = prepare_runner(spec, Events(), progress=False, evaluate=False)
    rows = []
    for name, config in configs(args.model).items():
        runner.loaded.restore()
        runner.compress(config)  # warms the cache (and the profile of non-uniform configs)
        seconds, shares = profile_one(runner, config)
        total = sum(shares.values())
        rows.append({"model": args.model, "config": name, "key": config.key(), "seconds": seconds,
                     "steps": {k: v / total for k, v in sorted(shares.items(),
                                                              key=lambda kv: -kv[1])}})  # fmt: skip
    table = Table(title=f"where a cached compression's time goes: {args.model}, 1 thread")
    table.add_column("config")
    table.add_column("seconds", justify="right")
    steps = list(dict.fromkeys(s for r in rows for s in r["steps"]))
    for step in steps:
        table.add_column(step, justify="right")
    for r in rows:
        table.add_row(r["config"], f"{r['seconds']:.1f}",
                      *(f"{r['steps'].get(s, 0.0):.0%}" for s in steps))  # fmt: skip
    console.print(table)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"profile-{args.model}.json"
    out.write_text(json.dumps(rows, indent=1))
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
