"""Does the demo model degrade under compression the way real LLMs do?

Real LLMs share a few extremes whatever their size: 2-bit round-to-nearest and 70% magnitude
pruning destroy them, GPTQ and SparseGPT recover much of what the naive methods lose, and 4-bit
GPTQ or 50% SparseGPT keep most of the model. A toy that shrugs all of this off teaches a user
the wrong lessons, so the demo is held to these checks; `python -m sweep.demo.criteria` (or
`make demo-criteria`) measures them with the same runner as a trial and prints each check.

Only the extremes are fixed. Which of joint compression or quantization alone wins at a given
TCr is what the paper-style table measures, and nothing here prefers either.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sweep.compress.config import CompressionConfig
from sweep.errors import UserError

DEMO_SPEC = Path(__file__).resolve().parents[2] / "studies" / "demo.yaml"
BASE_MIN_ACCURACY = 0.8
CLEAR_GAP = 0.1  # "clearly below": at least this much Sr apart

PROBES: dict[str, CompressionConfig] = {
    "2-bit RTN": CompressionConfig(bits=2, quant_method="rtn"),
    "2-bit GPTQ": CompressionConfig(bits=2, quant_method="gptq"),
    "3-bit GPTQ": CompressionConfig(bits=3, quant_method="gptq"),
    "4-bit GPTQ": CompressionConfig(bits=4, quant_method="gptq"),
    "70% magnitude": CompressionConfig(sparsity=0.7, prune_method="magnitude"),
    "2:4 magnitude": CompressionConfig(pattern="2:4", prune_method="magnitude"),
    "2:4 SparseGPT": CompressionConfig(pattern="2:4", prune_method="sparsegpt"),
    "50% SparseGPT": CompressionConfig(sparsity=0.5, prune_method="sparsegpt"),
}


@dataclass(frozen=True)
class Check:
    """One criterion: what it says, and whether the measured Sr (by probe name) meet it."""

    text: str
    holds: Callable[[dict[str, float]], bool]


CHECKS = [
    Check("2-bit RTN: Sr <= 0.5", lambda sr: sr["2-bit RTN"] <= 0.5),
    Check(
        f"2-bit GPTQ clearly below 3-bit GPTQ (by {CLEAR_GAP})",
        lambda sr: sr["3-bit GPTQ"] - sr["2-bit GPTQ"] >= CLEAR_GAP,
    ),
    Check("70% magnitude: Sr <= 0.5", lambda sr: sr["70% magnitude"] <= 0.5),
    Check(
        "2:4 magnitude below 2:4 SparseGPT", lambda sr: sr["2:4 magnitude"] < sr["2:4 SparseGPT"]
    ),
    Check("4-bit GPTQ: Sr >= 0.95", lambda sr: sr["4-bit GPTQ"] >= 0.95),
    Check("50% SparseGPT: Sr >= 0.8", lambda sr: sr["50% SparseGPT"] >= 0.8),
]


def measure(model: str | Path, probes: list[str] | None = None) -> dict[str, object]:
    """Score the base model and each probe (all by default) with the demo study's tasks and
    calibration; returns {"base": {task: acc}, "probes": {name: {"sr": .., "scores": ..}}}."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from sweep.events import Events
    from sweep.spec import load_spec, with_overrides
    from sweep.workers import prepare_runner

    spec = with_overrides(load_spec(DEMO_SPEC), model=str(model))
    names = probes or list(PROBES)
    with prepare_runner(spec, Events(), progress=False) as runner:
        base = runner.evaluate_base()
        results: dict[str, object] = {}
        for name in names:
            m = runner.run(PROBES[name], base).measurement
            scores = {k: round(v, 4) for k, v in m.task_scores.items()}
            results[name] = {"sr": round(m.sr, 4), "perplexity": m.perplexity, "scores": scores}
            shown = "  ".join(f"{k.removeprefix('demo_')} {v:.3f}" for k, v in scores.items())
            print(f"{name:<15} Sr {m.sr:.3f}  {shown}  ppl {m.perplexity or 0:.2f}", flush=True)
    return {"base": dict(base.scores), "probes": results}


def verdicts(measured: dict[str, object]) -> list[tuple[str, bool]]:
    """Each criterion with whether it holds (the base model's accuracies first)."""
    base: dict[str, float] = measured["base"]  # type: ignore[assignment]
    out = [(f"base {task} >= {BASE_MIN_ACCURACY}", acc >= BASE_MIN_ACCURACY)
           for task, acc in base.items()]  # fmt: skip
    sr = {name: r["sr"] for name, r in measured["probes"].items()}  # type: ignore[union-attr]
    return out + [(c.text, c.holds(sr)) for c in CHECKS]


def check(model: str | Path) -> dict[str, object]:
    """Measure every probe on ``model``, print each criterion's verdict, and return the
    measurements with ``"verdicts"`` ({criterion: holds}) added."""
    measured = measure(model)
    results = verdicts(measured)
    for text, ok in results:
        print(f"{'pass' if ok else 'FAIL'}  {text}")
    return measured | {"verdicts": dict(results)}


def main() -> None:
    """Command-line entry point: exit 1 when any criterion fails."""
    from sweep.demo import MODEL_DIR

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(MODEL_DIR), help="model folder (default: demo)")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args()
    try:
        record = check(args.model)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if args.json:
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    sys.exit(0 if all(record["verdicts"].values()) else 1)  # type: ignore[union-attr]


if __name__ == "__main__":
    main()
