"""Uniform against non-uniform compression at equal theoretical compression (TCr 81.25% and
87.5%), on the demo model and on SmolLM2-135M.

At each TCr the uniform arm is every (sparsity, bits) pair that reaches it exactly, with the
study's methods (GPTQ; SparseGPT and, on the demo, Wanda; prune-then-quantize Case B, and the
joint pass for SparseGPT). The non-uniform arm is each of those made non-uniform where it can
be: OWL's profile (M 5, lambda 0.08) where it prunes unstructured, bits allocated by the error
model where the width is 3 or 4 (``sweep.compress.profile``). A pair that has no non-uniform
form (2-bit alone: a mixed budget of 2 gives every layer 2) is left out of that arm, so the
non-uniform arm never has more trials than the uniform one. Every configuration is computed
once with the study's own trial code, evaluated in full, and kept in
``bench-results/allocation-<model>.json`` (a rerun computes only what is missing).

Writes ``bench-results/allocation.json``: one row per model and TCr, the best configuration of
each arm by Sr (its Sr, perplexity, real ratio), every pair measured, and ``docs/allocation.png``.
Run: ``make bench-allocation`` (``MODELS="demo smollm2-135m"``, the default; SmolLM2 takes about
an hour on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

from sweep.compress import CompressionConfig
from sweep.events import Events
from sweep.spec import StudySpec, load_spec

RESULTS = Path("bench-results")
PLOT = Path("docs/allocation.png")
SPECS = {"demo": Path("studies/demo.yaml"), "smollm2-135m": Path("studies/smollm2-paper.yaml")}
TARGETS = (0.8125, 0.875)
PAIRS = {0.8125: [(0.0, 3), (0.25, 4)], 0.875: [(0.0, 2), (0.5, 4), (0.75, 8)]}
GROUP = {"demo": 128, "smollm2-135m": 64}


def bench_spec(model: str) -> StudySpec:
    spec = load_spec(SPECS[model])
    stages = spec.evaluation.stages.model_copy(update={"mode": "off"})
    evaluation = spec.evaluation.model_copy(update={"stages": stages})
    return spec.model_copy(update={"name": f"bench-allocation-{model}", "evaluation": evaluation})


def uniform_arm(model: str, tcr: float) -> list[CompressionConfig]:
    pruners = ["wanda", "sparsegpt"] if model == "demo" else ["sparsegpt"]
    configs = []
    for sparsity, bits in PAIRS[tcr]:
        common = dict(bits=bits, quant_method="gptq", group_size=GROUP[model])
        if sparsity == 0:
            configs.append(CompressionConfig(**common))
            continue
        if model != "demo" and bits == 8:
            continue  # 75% + 8-bit: hopeless on a real model, an hour on a CPU
        for pruner in pruners:
            configs.append(CompressionConfig(sparsity=sparsity, prune_method=pruner, **common))
            if pruner == "sparsegpt":
                configs.append(
                    CompressionConfig(sparsity=sparsity, prune_method=pruner, order="joint",
                                      **common)
                )  # fmt: skip
    return [c.canonical() for c in configs]


def non_uniform(config: CompressionConfig) -> CompressionConfig | None:
    """``config`` with OWL's profile where it prunes unstructured and mixed bits where its width
    can be averaged; None when neither applies."""
    fields = config.to_dict()
    if config.prunes and config.nm is None:
        fields["profile"] = "owl"
    if config.quantizes and config.bits in (3, 4):
        fields["allocation"] = "mixed"
    made = CompressionConfig(**fields).canonical()
    return made if made.non_uniform else None


def single_effects(config: CompressionConfig) -> list[CompressionConfig]:
    """OWL alone and mixed bits alone, when ``config`` takes both (to tell which one acts);
    measured beside the arms, never counted in them."""
    both = non_uniform(config)
    if both is None or both.profile == "uniform" or both.allocation == "uniform":
        return []
    return [replace(both, allocation="uniform").canonical(),
            replace(both, profile="uniform").canonical()]  # fmt: skip


def compute(model: str, configs: list[CompressionConfig], console: Console) -> dict[str, dict]:
    """Each configuration's full measurement, by key; computed only when not yet stored."""
    from sweep.workers import prepare_runner

    path = RESULTS / f"allocation-{model}.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    spec = bench_spec(model)
    missing = [c for c in configs if c.key() not in stored.get("records", {})]
    if not missing:
        return stored["records"]
    with prepare_runner(spec, Events(), progress=False) as runner:
        context = [runner.fingerprints.model_dump()]
        records = stored.get("records", {}) if stored.get("context") == context else {}
        base = runner.evaluate_base()
        for i, config in enumerate(configs, 1):
            if config.key() in records:
                continue
            result = runner.run(config, base)
            m = result.measurement
            records[config.key()] = {"config": config.to_dict(), "measurement": m.to_dict()}
            console.print(
                f"{model} [{i}/{len(configs)}] {config.key()}: Sr {m.sr:.4f} ppl "
                f"{m.perplexity:.3f} TCr {m.tcr:.4f} ({m.timings['total_s']:.0f}s) "
                f"{m.layer_summary}"
            )
            path.write_text(json.dumps({"context": context, "records": records}, indent=1))
    return records


def _point(key: str, records: dict[str, dict]) -> dict:
    m = records[key]["measurement"]
    return {"config": key, "sr": m["sr"], "perplexity": m["perplexity"], "tcr": m["tcr"],
            "real_ratio": m["real_ratio"], "layers": m.get("layers") is not None}  # fmt: skip


def _part(parts: list[CompressionConfig] | None, i: int, records: dict[str, dict]) -> dict | None:
    return _point(parts[i].key(), records) if parts else None


def bench_model(model: str, console: Console) -> list[dict]:
    arms = {t: uniform_arm(model, t) for t in TARGETS}
    counterparts = {c.key(): non_uniform(c) for t in TARGETS for c in arms[t]}
    everything = [c for t in TARGETS for c in arms[t]]
    everything += [c for c in counterparts.values() if c is not None]
    singles = {c.key(): single_effects(c) for t in TARGETS for c in arms[t]
               if model == "demo" or t == max(TARGETS)}  # fmt: skip
    everything += [c for parts in singles.values() for c in parts]
    records = compute(model, everything, console)
    rows = []
    for tcr in TARGETS:
        pairs = [
            {"uniform": _point(c.key(), records),
             "non_uniform": None if counterparts[c.key()] is None
             else _point(counterparts[c.key()].key(), records),  # type: ignore[union-attr]
             "owl_only": _part(singles.get(c.key()), 0, records),
             "mixed_only": _part(singles.get(c.key()), 1, records)}
            for c in arms[tcr]
        ]  # fmt: skip
        uniform = max((p["uniform"] for p in pairs), key=lambda p: p["sr"])
        made = [p["non_uniform"] for p in pairs if p["non_uniform"] is not None]
        best = max(made, key=lambda p: p["sr"]) if made else None
        rows.append({
            "model": model, "tcr": tcr,
            "trials": {"uniform": len(pairs), "non_uniform": len(made)},
            "uniform": {k: uniform[k] for k in ("config", "sr", "perplexity", "real_ratio")},
            "non_uniform": None if best is None
            else {k: best[k] for k in ("config", "sr", "perplexity", "real_ratio")},
            "pairs": pairs,
        })  # fmt: skip
    return rows


def summarise(rows: list[dict], console: Console) -> None:
    table = Table(title="best of each arm at equal TCr (full evaluation)")
    for col in ("model", "TCr", "trials u / n-u", "uniform", "Sr", "ppl", "non-uniform", "Sr",
                "ppl", "ΔSr"):  # fmt: skip
        table.add_column(col, justify="right")
    for r in rows:
        u, n, trials = r["uniform"], r["non_uniform"], r["trials"]
        table.add_row(
            r["model"], f"{r['tcr']:.2%}", f"{trials['uniform']} / {trials['non_uniform']}",
            u["config"], f"{u['sr']:.3f}", f"{u['perplexity']:.2f}",
            "–" if n is None else n["config"], "–" if n is None else f"{n['sr']:.3f}",
            "–" if n is None else f"{n['perplexity']:.2f}",
            "–" if n is None else f"{n['sr'] - u['sr']:+.3f}",
        )  # fmt: skip
    console.print(table)
    pairs = Table(title="each uniform configuration and its non-uniform form")
    for col in ("model", "TCr", "uniform", "Sr / ppl", "non-uniform", "OWL only", "mixed only"):
        pairs.add_column(col, justify="right")

    def show(point: dict | None) -> str:
        return "–" if point is None else f"{point['sr']:.3f} / {point['perplexity']:.2f}"

    for r in rows:
        for p in r["pairs"]:
            pairs.add_row(
                r["model"], f"{r['tcr']:.2%}", p["uniform"]["config"], show(p["uniform"]),
                show(p["non_uniform"]), show(p.get("owl_only")), show(p.get("mixed_only")),
            )  # fmt: skip
    console.print(pairs)


def plot(rows: list[dict], path: Path) -> None:
    """Each uniform configuration against its non-uniform form: Sr (above the diagonal, the
    non-uniform form is better) and perplexity (below it, better); PNG where kaleido can run,
    else HTML beside it."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from sweep.plots import PngUnavailable, write_html, write_png

    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        "Sr (higher is better)", "word perplexity (lower is better, log scale)"))  # fmt: skip
    symbols = {"demo": "circle", "smollm2-135m": "diamond"}
    colours = {0.8125: "#1f77b4", 0.875: "#d62728"}
    for model in dict.fromkeys(r["model"] for r in rows):
        for r in (r for r in rows if r["model"] == model):
            pairs = [p for p in r["pairs"] if p["non_uniform"] is not None]
            for col, metric in ((1, "sr"), (2, "perplexity")):
                fig.add_trace(go.Scatter(
                    x=[p["uniform"][metric] for p in pairs],
                    y=[p["non_uniform"][metric] for p in pairs],
                    mode="markers", name=f"{model}, TCr {r['tcr']:.2%}", showlegend=col == 1,
                    legendgroup=f"{model}{r['tcr']}",
                    hovertext=[f"{p['uniform']['config']} → {p['non_uniform']['config']}"
                               for p in pairs],
                    marker={"symbol": symbols.get(model, "circle"), "size": 11,
                            "color": colours.get(r["tcr"], "grey")},
                ), row=1, col=col)  # fmt: skip
    for col, metric, log in ((1, "sr", False), (2, "perplexity", True)):
        values = [p[side][metric] for r in rows for p in r["pairs"] if p["non_uniform"]
                  for side in ("uniform", "non_uniform")]  # fmt: skip
        lo, hi = min(values), max(values)
        diagonal = go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", showlegend=False,
                              line={"color": "grey", "dash": "dot"})  # fmt: skip
        fig.add_trace(diagonal, row=1, col=col)
        kind = "log" if log else "linear"
        fig.update_xaxes(title_text="uniform", type=kind, row=1, col=col)
        fig.update_yaxes(title_text="non-uniform (OWL, mixed bits)", type=kind, row=1, col=col)
    fig.update_layout(width=1150, height=480,
                      title="each uniform configuration against its non-uniform form")  # fmt: skip
    try:
        write_png(fig, path)
    except PngUnavailable:
        write_html(fig, path.with_suffix(".html"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(SPECS), choices=sorted(SPECS))
    parser.add_argument("--plot", type=Path, default=PLOT)
    args = parser.parse_args()
    console = Console()
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "allocation.json"
    kept = json.loads(path.read_text()) if path.exists() else []
    rows = [r for r in kept if r["model"] not in args.models]
    for model in args.models:
        rows += bench_model(model, console)
    rows.sort(key=lambda r: (list(SPECS).index(r["model"]), r["tcr"]))
    summarise(rows, console)
    path.write_text(json.dumps(rows, indent=1))
    plot(rows, args.plot)
    console.print(f"wrote {path} and {args.plot}")


if __name__ == "__main__":
    main()
