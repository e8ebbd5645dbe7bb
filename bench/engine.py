"""The compression engine against llm-compressor's ``oneshot``, side by side in one run.

For each config below both tools compress the same model with the same calibration token ids
and an equivalent recipe (SparseGPT: dampening 0.01, block 128, unstructured or 2:4; GPTQ:
symmetric, group 128, static activation ordering, dampening 0.01; the float formats as
llm-compressor's presets FP8_DYNAMIC, NVFP4A16 and NVFP4, by RTN (``QuantizationModifier``) and
GPTQ; the Linear layers inside the transformer blocks, lm_head left alone). Our perplexity is
measured with the activations quantized as a trial evaluates them, the peer's as its own forward
quantizes them. Each row reports the wall-clock seconds of the
compression call alone (``compress_model`` / ``oneshot``; model loading and copying excluded),
the speedup ``peer_s / ours_s``, and the word perplexity of both results on one lm-eval task.

Our engine runs in two modes: ``cached`` with a ``CalibrationCache`` already warm for this model
and calibration set (what every trial after a study's first sees; the cold first-trial time is
the ``ours_cold_s`` field) and ``sequential`` (each block calibrated on the compressed blocks
before it, as ``oneshot``'s sequential pipeline does); a config that needs no calibration (RTN
weights) has one mode, ``data-free``. The peer runs once per config; the rows of a config share
its numbers. Both tools run in one process with the same torch thread count
(``--threads``, default 1: steady timings on a shared CPU).

Run: ``make bench-engine`` (the demo model; ``MODEL=smollm2-135m`` for the real small model, on
its real-text perplexity task and calibration, in groups of 64, written to
``bench-results/engine-smollm2-135m.json``) or ``python -m bench.engine --model PATH``.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sweep.compress import Calibration, CalibrationCache, CompressionConfig, compress_model
from sweep.compress.driver import compressible_linears, find_blocks
from sweep.compress.hessian import BLOCK_SIZE, DAMPENING
from sweep.compress.layer import needed_stats, requires_calibration

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "bench-results" / "engine.json"
GROUP = 128  # quantization group size, on both sides


@dataclass(frozen=True)
class Case:
    """One benchmarked config: ours as a ``CompressionConfig``, the peer's as a recipe."""

    name: str
    ours: CompressionConfig
    sparsity: float = 0.0  # SparseGPT step: fraction pruned (0 = none); ignored with a pattern
    pattern: str = "unstructured"  # or "2:4"
    bits: int = 16  # GPTQ step: bit-width (16 = none)
    group: int = GROUP  # GPTQ step: group size
    scheme: str | None = None  # the peer's preset scheme (FP8_DYNAMIC, NVFP4A16), if one

    def recipe(self, model: nn.Module) -> list[Any]:
        """The llm-compressor modifiers equivalent to ``self.ours`` for ``model``."""
        from llmcompressor.modifiers.pruning import SparseGPTModifier
        from llmcompressor.modifiers.quantization import GPTQModifier

        modifiers: list[Any] = []
        if self.sparsity or self.pattern != "unstructured":
            nm = "0:0" if self.pattern == "unstructured" else self.pattern
            modifiers.append(
                SparseGPTModifier(
                    sparsity=0.5 if nm != "0:0" else self.sparsity,
                    mask_structure=nm,
                    block_size=BLOCK_SIZE,
                    dampening_frac=DAMPENING,
                    targets=block_targets(model),
                    ignore=other_linears(model),
                )
            )
        if self.bits < 16 and self.ours.quant_method == "rtn":
            from llmcompressor.modifiers.quantization import QuantizationModifier

            modifiers.append(
                QuantizationModifier(
                    targets=["Linear"], scheme=self.scheme, ignore=other_linears(model)
                )
            )
        elif self.bits < 16:
            common = {
                "block_size": BLOCK_SIZE,
                "dampening_frac": DAMPENING,
                "ignore": other_linears(model),
            }
            if self.scheme is not None:
                modifiers.append(GPTQModifier(targets=["Linear"], scheme=self.scheme, **common))
            elif self.bits == 4 and self.group == 128:  # the preset a user picks: W4A16
                modifiers.append(GPTQModifier(targets=["Linear"], scheme="W4A16", **common))
            else:
                groups = _int_groups(self.bits, self.group)
                modifiers.append(GPTQModifier(config_groups=groups, **common))
        return modifiers


def _int_groups(bits: int, group: int) -> dict[str, Any]:
    """A W{bits}A16 scheme shaped like llm-compressor's W4A16 preset."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    weights = QuantizationArgs(
        num_bits=bits, type="int", symmetric=True, strategy="group", group_size=group
    )
    return {"group_0": QuantizationScheme(targets=["Linear"], weights=weights)}


def _gptq(bits: int, group: int, **more: Any) -> CompressionConfig:
    return CompressionConfig(
        bits=bits,
        group_size=group,
        symmetric=True,
        quant_method="gptq",
        act_order=True,  # static groups, as llm-compressor's actorder="static"
        order="prune_first",
        case="A",  # llm-compressor's GPTQ does not keep a sparsity mask
        **more,
    )


def _float_cases() -> tuple[Case, ...]:
    """The float formats against llm-compressor's presets: FP8_DYNAMIC (fp8 weights per channel,
    activations per token at run time), NVFP4A16 and NVFP4 (weights and activations, the
    activations' scale calibrated), by RTN and by GPTQ."""
    fp8 = {"format": "fp8", "activations": "fp8_dynamic"}
    rtn = {"quant_method": "rtn", "order": "prune_first"}
    w4a16 = {"format": "nvfp4"}
    w4a4 = {"format": "nvfp4", "activations": "nvfp4"}
    nvfp4 = {"bits": 4, "group": 16}
    return (
        Case("rtn-fp8-dynamic", CompressionConfig(**fp8, **rtn), bits=8, scheme="FP8_DYNAMIC"),
        Case("gptq-fp8-dynamic", _gptq(8, GROUP, **fp8), bits=8, scheme="FP8_DYNAMIC"),
        Case("rtn-nvfp4a16", CompressionConfig(**w4a16, **rtn), **nvfp4, scheme="NVFP4A16"),
        Case("gptq-nvfp4a16", _gptq(4, 16, **w4a16), **nvfp4, scheme="NVFP4A16"),
        Case("rtn-nvfp4-w4a4", CompressionConfig(**w4a4, **rtn), **nvfp4, scheme="NVFP4"),
        Case("gptq-nvfp4-w4a4", _gptq(4, 16, **w4a4), **nvfp4, scheme="NVFP4"),
    )


def make_cases(group: int = GROUP) -> tuple[Case, ...]:
    """The benchmarked configs: integers in groups of ``group``, then the float formats (whose
    groups are their own)."""
    return (
        Case(
            "sparsegpt-50%",
            CompressionConfig(sparsity=0.5, prune_method="sparsegpt"),
            sparsity=0.5,
        ),
        Case(
            "sparsegpt-2:4",
            CompressionConfig(pattern="2:4", prune_method="sparsegpt"),
            pattern="2:4",
        ),
        Case(f"gptq-w4-g{group}", _gptq(4, group), bits=4, group=group),
        Case(f"gptq-w3-g{group}", _gptq(3, group), bits=3, group=group),
        Case(
            "sparsegpt-25%+gptq-w4 (A)",
            _gptq(4, group, sparsity=0.25, prune_method="sparsegpt"),
            sparsity=0.25,
            bits=4,
            group=group,
        ),
        *_float_cases(),
    )


CASES = make_cases()


def block_targets(model: nn.Module) -> list[str]:
    """A regex naming the transformer blocks of ``model`` (e.g. ``model.layers.3``)."""
    blocks = find_blocks(model)
    prefix = next(name for name, m in model.named_modules() if m is blocks)
    return [rf"re:^{re.escape(prefix)}\.\d+$"]


def other_linears(model: nn.Module) -> list[str]:
    """The Linear layers outside the transformer blocks (lm_head): left uncompressed."""
    inside = set(compressible_linears(model))
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n not in inside]


@torch.no_grad()
def weight_stats(model: nn.Module, group: int = GROUP) -> tuple[float, int]:
    """(fraction of exact zeros, most distinct values in one row of one group) over the
    compressible weights: the evidence that a tool really pruned and quantized."""
    zeros = total = levels = 0
    for layer in compressible_linears(model).values():
        w = layer.weight.detach().float()  # (out, in)
        zeros += int((w == 0).sum())
        total += w.numel()
        for g in range(0, w.shape[1], group):
            s = w[:, g : g + group].sort(dim=1).values  # (out, gs)
            distinct = 1 + (s[:, 1:] != s[:, :-1]).sum(dim=1)  # (out,)
            levels = max(levels, int(distinct.max()))
    return zeros / total, levels


def check_compressed(case: Case, zero_fraction: float, levels: int, who: str) -> None:
    """Raise if ``who``'s result does not show ``case``'s sparsity and grid."""
    target = 0.5 if case.pattern != "unstructured" else case.sparsity
    if case.bits == 16 and abs(zero_fraction - target) > 0.01:
        raise RuntimeError(f"{who}: {case.name} left {zero_fraction:.3f} zeros, not {target}")
    if case.bits < 16 and not 2 < levels <= 2**case.bits:
        raise RuntimeError(f"{who}: {case.name} has {levels} values in a group, not <= 2^bits")


def run_peer(
    base: nn.Module,
    case: Case,
    calibration: torch.Tensor,
    tokenizer: Any,
    config_dir: Path,
    batch_size: int,
) -> tuple[nn.Module, float]:
    """``oneshot`` on a fresh copy of ``base``; returns (compressed copy, seconds of oneshot)."""
    from datasets import Dataset
    from llmcompressor import oneshot

    model = copy.deepcopy(base)
    model.config._name_or_path = str(config_dir)  # oneshot reads the config from there
    samples, seq_len = calibration.shape
    data = Dataset.from_dict(
        {"input_ids": calibration.tolist(), "attention_mask": torch.ones_like(calibration).tolist()}
    )
    recipe = case.recipe(model)
    torch.manual_seed(0)
    start = time.perf_counter()
    model = oneshot(
        model=model,
        tokenizer=tokenizer,
        dataset=data,
        recipe=recipe,
        num_calibration_samples=samples,
        max_seq_length=seq_len,
        batch_size=batch_size,
        shuffle_calibration_samples=False,
    )
    return model, time.perf_counter() - start


class PerplexityMeter:
    """Builds an ``Evaluator`` that runs only one perplexity task, for any model."""

    def __init__(
        self,
        tokenizer: Any,
        task: str,
        task_folders: Sequence[Path] = (),
        batch_size: int = 32,
    ) -> None:
        self.tokenizer = tokenizer
        self.task = task
        self.task_folders = list(task_folders)
        self.batch_size = batch_size

    def bind(self, model: nn.Module) -> Any:
        """An ``Evaluator`` on ``model`` (call ``.perplexity()``, then ``.close()``)."""
        from sweep.evaluation.harness import Evaluator
        from sweep.spec import EvaluationSpec

        spec = EvaluationSpec(
            tasks=[self.task], perplexity_task=self.task, batch_size=self.batch_size
        )
        return Evaluator(spec, model, self.tokenizer, self.task_folders)

    def measure(self, model: nn.Module) -> float:
        """Word perplexity of ``model`` on the task."""
        evaluator = self.bind(model)
        try:
            return evaluator.perplexity()
        finally:
            evaluator.close()


def perplexity(evaluator: Any, model: nn.Module, case: Case, result: Any) -> float:
    """``evaluator``'s perplexity of our compressed ``model`` (``result`` of its compression),
    its activations quantized as ``case`` asks (as a trial evaluates it)."""
    from sweep.compress.activations import quantized_activations

    with quantized_activations(model, case.ours.activations, result.input_scales):
        return evaluator.perplexity()


def _run_ours(
    work: nn.Module,
    snapshot: Any,
    evaluator: Any,
    case: Case,
    calibration: torch.Tensor,
    batch_size: int,
) -> tuple[dict[str, tuple[float, float, tuple[float, int]]], float | None]:
    """Our engine on ``case``, each mode from the base weights (restored after): mode ->
    (seconds, perplexity, weight stats), and the cold cache's seconds. A data-free case (RTN)
    has one mode."""
    ours: dict[str, tuple[float, float, tuple[float, int]]] = {}
    if not requires_calibration(case.ours):
        result, seconds = _timed(work, case.ours)
        stats = weight_stats(work, case.group)
        ours["data-free"] = (seconds, perplexity(evaluator, work, case, result), stats)
        snapshot.restore()
        return ours, None
    cache = CalibrationCache()
    cached_cal = Calibration(calibration, "cached", cache, batch_size)
    _, cold_s = _timed(work, case.ours, calibration=cached_cal)
    snapshot.restore()
    cached, cached_s = _timed(work, case.ours, calibration=cached_cal)
    if needed_stats(case.ours) and not cached.stats_from_cache:
        raise RuntimeError("the warm CalibrationCache was not used")
    stats = weight_stats(work, case.group)
    ours["cached"] = (cached_s, perplexity(evaluator, work, case, cached), stats)
    snapshot.restore()
    sequential = Calibration(calibration, "sequential", None, batch_size)
    result, seq_s = _timed(work, case.ours, calibration=sequential)
    stats = weight_stats(work, case.group)
    ours["sequential"] = (seq_s, perplexity(evaluator, work, case, result), stats)
    snapshot.restore()
    return ours, cold_s


def _timed(model: nn.Module, config: CompressionConfig, **kwargs: Any) -> tuple[Any, float]:
    torch.manual_seed(0)
    start = time.perf_counter()
    result = compress_model(model, config, False, **kwargs)
    return result, time.perf_counter() - start


def run_engine_bench(
    base: nn.Module,
    tokenizer: Any,
    calibration: torch.Tensor,
    meter: PerplexityMeter,
    cases: Sequence[Case] = CASES,
    batch_size: int = 8,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Compress ``base`` (left unchanged) by each case with both tools; one row per
    (case, mode). ``calibration``: token ids (samples, seq_len), the same for both."""
    from sweep.model import WeightSnapshot

    base = base.eval()
    work = copy.deepcopy(base)
    snapshot = WeightSnapshot(work)
    ours_eval = meter.bind(work)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-config-") as config_dir:
        base.config.save_pretrained(config_dir)
        try:
            base_ppl = ours_eval.perplexity()
            log(f"base model: word perplexity {base_ppl:.4f}")
            for case in cases:
                log(f"{case.name}: ours ({case.ours.key()}) ...")
                ours, cold_s = _run_ours(work, snapshot, ours_eval, case, calibration, batch_size)

                log(f"{case.name}: llm-compressor oneshot ...")
                peer, peer_s = run_peer(
                    base, case, calibration, tokenizer, Path(config_dir), batch_size
                )
                peer_zeros, peer_levels = weight_stats(peer, case.group)
                check_compressed(case, peer_zeros, peer_levels, "llm-compressor")
                peer_ppl = meter.measure(peer)
                del peer
                for mode, (ours_s, ours_ppl, (zeros, levels)) in ours.items():
                    check_compressed(case, zeros, levels, f"sweep ({mode})")
                    rows.append(
                        {
                            "config": case.name,
                            "mode": mode,
                            "ours_s": ours_s,
                            "peer_s": peer_s,
                            "speedup": peer_s / ours_s,
                            "ours_ppl": ours_ppl,
                            "peer_ppl": peer_ppl,
                            "ppl_ratio": ours_ppl / peer_ppl,
                            "base_ppl": base_ppl,
                            "ours_cold_s": cold_s if mode == "cached" else None,
                            "ours_config": case.ours.key(),
                            "ours_zero_fraction": zeros,
                            "peer_zero_fraction": peer_zeros,
                            "ours_max_levels": levels if case.bits < 16 else None,
                            "peer_max_levels": peer_levels if case.bits < 16 else None,
                            "samples": int(calibration.shape[0]),
                            "seq_len": int(calibration.shape[1]),
                            "batch_size": batch_size,
                            "threads": torch.get_num_threads(),
                        }
                    )
                cold = {"cached": f" (cold {cold_s:.2f}s)"} if cold_s is not None else {}
                times = ", ".join(
                    f"{mode} {t:.2f}s{cold.get(mode, '')}" for mode, (t, _, _) in ours.items()
                )
                ppls = "/".join(f"{ppl:.4f}" for _, ppl, _ in ours.values())
                log(f"  ours {times}; peer {peer_s:.2f}s; ppl ours {ppls}, peer {peer_ppl:.4f}")
        finally:
            ours_eval.close()
    return rows


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    """The rows as a rich table, with the base perplexity and cold times beneath."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="sweep engine vs llm-compressor oneshot (same model, data, recipe)")
    for col in ("config", "mode", "ours_s", "peer_s", "speedup", "ours_ppl", "peer_ppl"):
        table.add_column(col, justify="left" if col in ("config", "mode") else "right")
    table.add_column("ppl ratio", justify="right")
    for r in rows:
        table.add_row(
            r["config"],
            r["mode"],
            f"{r['ours_s']:.2f}",
            f"{r['peer_s']:.2f}",
            f"{r['speedup']:.2f}x",
            f"{r['ours_ppl']:.4f}",
            f"{r['peer_ppl']:.4f}",
            f"{r['ppl_ratio']:.4f}",
        )
    console = Console()
    if not console.is_terminal:  # a log file or a pipe: do not squeeze to 80 columns
        console = Console(width=150)
    console.print(table)
    if rows:
        cold = ", ".join(f"{r['config']} {r['ours_cold_s']:.2f}s" for r in rows if r["ours_cold_s"])
        console.print(f"base model word perplexity: {rows[0]['base_ppl']:.4f}")
        console.print(f"ours, cached mode with a cold cache (a study's first trial): {cold}")
        console.print(
            f"{rows[0]['samples']} calibration samples x {rows[0]['seq_len']} tokens, "
            f"batch {rows[0]['batch_size']}, {rows[0]['threads']} torch threads"
        )


def _quiet(progress_bars: bool) -> None:
    """Keep the peer's per-module logs (and, unless asked, all progress bars) off the console."""
    os.environ.setdefault("LLM_COMPRESSOR_LOG_LEVEL", "ERROR")  # read when llmcompressor loads
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not progress_bars:
        from tqdm import tqdm

        tqdm.__init__ = functools.partialmethod(tqdm.__init__, disable=True)  # type: ignore[method-assign]


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Command line: run the benchmark, print the table, write the JSON rows."""
    parser = argparse.ArgumentParser(prog="python -m bench.engine", description=__doc__)
    parser.add_argument(
        "--model",
        help="model folder, or a model sweep knows by name (smollm2-135m: its real-text "
        "perplexity task and calibration, groups of 64); default: the bundled demo model",
    )
    parser.add_argument("--samples", type=int, default=64, help="calibration samples")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per sample")
    parser.add_argument("--batch-size", type=int, default=8, help="calibration batch size")
    parser.add_argument("--calibration-file", type=Path, help="text file (default: demo's)")
    parser.add_argument("--ppl-task", help="lm-eval perplexity task (default: demo's)")
    parser.add_argument("--tasks-dir", type=Path, action="append", help="local task folder")
    parser.add_argument("--configs", nargs="+", help="case names to run (default: all)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads, both tools (0: torch's default). The layer loops run small "
        "ops: with several threads, one busy core stalls both tools at every op",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output")
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    args = parser.parse_args(argv)
    _quiet(args.progress)

    from sweep.calibration_data import calibration_batches
    from sweep.model import load_model
    from sweep.spec import CalibrationSpec, load_spec

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tasks_dir, ppl_task = args.tasks_dir, args.ppl_task
    from sweep.demo import CALIBRATION_FILE, MODEL_DIR, PERPLEXITY_TASK, TASKS_DIR
    from sweep.zoo import is_named, model_folder

    group = GROUP
    calibration_spec = CalibrationSpec(
        path=args.calibration_file or CALIBRATION_FILE, samples=args.samples, seq_len=args.seq_len
    )
    model_ref = args.model or MODEL_DIR
    if args.model and is_named(args.model):  # a real model: its real-text task and calibration
        from sweep.realtext import TASKS_DIR as REAL_TASKS

        model_ref = model_folder(args.model, print)
        real = load_spec(REPO / "studies/smollm2-paper.yaml")
        calibration_spec = real.calibration.model_copy(
            update={"samples": args.samples, "seq_len": args.seq_len}
        )
        ppl_task = ppl_task or real.evaluation.perplexity_task
        tasks_dir = tasks_dir or [REAL_TASKS]
        group = real.search.group_sizes[0]
        if args.out == DEFAULT_OUT:
            args.out = DEFAULT_OUT.with_name(f"engine-{args.model}.json")
    ppl_task = ppl_task or PERPLEXITY_TASK
    tasks_dir = tasks_dir or [TASKS_DIR]
    model, tokenizer = load_model(model_ref, device="cpu")
    calibration = calibration_batches(calibration_spec, tokenizer)
    all_cases = make_cases(group)
    cases = all_cases
    if args.configs:
        unknown = set(args.configs) - {c.name for c in all_cases}
        if unknown:
            known = [c.name for c in all_cases]
            parser.error(f"unknown configs {sorted(unknown)}; known: {known}")
        cases = tuple(c for c in all_cases if c.name in args.configs)
    meter = PerplexityMeter(tokenizer, ppl_task, tasks_dir)
    rows = run_engine_bench(model, tokenizer, calibration, meter, cases, args.batch_size)
    print_table(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {args.out}")
    if not all(math.isfinite(r["ours_ppl"]) and math.isfinite(r["peer_ppl"]) for r in rows):
        raise SystemExit("a perplexity is not finite")
    return rows


if __name__ == "__main__":
    main()
