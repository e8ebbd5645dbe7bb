"""Search efficiency: how fast each sampler finds the Pareto front of a fully computed grid.

Every configuration of a grid inside the demo study's space is computed once, with the study's
own trial code, and kept in ``bench-results/search-grid.db`` (a ``sweep_results`` table), so
later runs only replay. Each sampler then runs against that table, a "trial" being a lookup,
for several seeds; we report the hypervolume of its front after k trials relative to the whole
grid's, and the number of trials it needs to reach 95% of it.

Run: ``make bench-search`` (or ``python -m bench.search``).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import optuna
from rich.console import Console
from rich.progress import track
from rich.table import Table

from sweep.compress.calibration import model_fingerprint
from sweep.results import ResultsTable, result_context, result_key
from sweep.space import all_configs, suggest_config
from sweep.spec import SamplerSpec, SearchSpace, StudySpec, load_spec
from sweep.study import make_sampler

RESULTS = Path("bench-results")
SAMPLERS = ("tpe", "nsga2", "gp", "random")
# A grid inside the demo study's space: both patterns, both one-pass and two-step joint
# compression, every bit-width, sparsity in steps of 0.1; the best pruner and quantizer.
GRID = {
    "sparsity": {"low": 0.0, "high": 0.7, "step": 0.1},
    "patterns": ["unstructured", "2:4"],
    "prune_methods": ["sparsegpt"],
    "quant_methods": ["gptq"],
    "bits": [2, 3, 4, 8, 16],
    "orders": ["prune_first", "joint"],
    "cases": ["B"],
}


def hypervolume_2d(points: list[tuple[float, float]], ref: tuple[float, float] = (0.0, 0.0)):
    """Area dominated by ``points`` (both coordinates maximised) and bounded below by ``ref``."""
    area, best_y = 0.0, ref[1]
    xs = sorted({max(x, ref[0]) for x, _ in points}, reverse=True)
    for i, x in enumerate(xs):
        best_y = max([best_y] + [y for px, y in points if max(px, ref[0]) == x])
        next_x = xs[i + 1] if i + 1 < len(xs) else ref[0]
        area += (x - next_x) * (best_y - ref[1])
    return area


def bench_spec() -> StudySpec:
    demo = load_spec(Path("studies/demo.yaml"))
    return demo.model_copy(update={"name": "bench-search", "search": SearchSpace(**GRID)})


def compute_grid(spec: StudySpec, db: Path, console: Console) -> dict[str, tuple[float, ...]]:
    """Objective values of every grid configuration, computing only those not yet stored."""
    from sweep.workers import prepare_runner

    results = ResultsTable(f"sqlite:///{db}")
    runner = prepare_runner(spec, console, progress=False)
    context = result_context(spec, model_fingerprint(runner.model))
    configs = sorted(all_configs(spec.search), key=lambda c: c.key())
    base = runner.evaluate_base()
    values: dict[str, tuple[float, ...]] = {}
    for config in track(configs, description="computing the grid", console=console):
        rkey = result_key(context, config)
        claim = results.claim(rkey, config.key(), context, spec.name, -1)
        if claim.owned:
            attrs = runner.run(config, base).attrs()
            results.finish(rkey, attrs)
        else:
            attrs = claim.result
        values[config.key()] = tuple(float(attrs[o]) for o in spec.objectives)
    runner.evaluator.close()
    return values


def replay(
    spec: StudySpec, sampler: str, seed: int, table: dict[str, tuple[float, ...]], n: int
) -> list[float]:
    """Hypervolume of the sampler's front after each of ``n`` lookup trials."""
    spec = spec.model_copy(update={"sampler": SamplerSpec(name=sampler, seed=seed)})
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        directions=["maximize"] * len(spec.objectives), sampler=make_sampler(spec)
    )
    seen: list[tuple[float, float]] = []
    curve = []
    for _ in range(n):
        trial = study.ask()
        values = table[suggest_config(trial, spec.search).key()]
        study.tell(trial, values)
        seen.append(values[:2])
        curve.append(hypervolume_2d(seen))
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS))
    args = parser.parse_args()
    console = Console()
    RESULTS.mkdir(exist_ok=True)
    spec = bench_spec()
    table = compute_grid(spec, RESULTS / "search-grid.db", console)
    grid_size = len(table)
    full = hypervolume_2d([v[:2] for v in table.values()])
    default = load_spec(Path("studies/demo.yaml")).sampler.name
    rows = []
    for sampler in args.samplers:
        for seed in range(args.seeds):
            curve = replay(spec, sampler, seed, table, grid_size)
            reached = [k + 1 for k, hv in enumerate(curve) if hv >= 0.95 * full]
            rows.append(
                {
                    "sampler": sampler,
                    "seed": seed,
                    "trials_to_95": reached[0] if reached else None,
                    "grid_size": grid_size,
                    "hv_ratio_at_quarter": curve[grid_size // 4 - 1] / full,
                    "hv_ratio_at_half": curve[grid_size // 2 - 1] / full,
                }
            )
    out = Table(title=f"search efficiency on a grid of {grid_size} configurations")
    for col in ("sampler", "median trials to 95%", "worst", "HV at n/4", "HV at n/2"):
        out.add_column(col, justify="right")
    summary = {}
    for sampler in args.samplers:
        mine = [r for r in rows if r["sampler"] == sampler]
        needed = [r["trials_to_95"] or grid_size + 1 for r in mine]
        summary[sampler] = statistics.median(needed)
        out.add_row(
            sampler + (" (default)" if sampler == default else ""),
            f"{summary[sampler]:g}",
            str(max(needed)),
            f"{statistics.median(r['hv_ratio_at_quarter'] for r in mine):.3f}",
            f"{statistics.median(r['hv_ratio_at_half'] for r in mine):.3f}",
        )
    console.print(out)
    (RESULTS / "search.json").write_text(json.dumps(rows, indent=1))
    verdict = "meets" if summary.get(default, grid_size) <= grid_size / 4 else "MISSES"
    console.print(
        f"default sampler {default}: median {summary.get(default)} trials to 95% of the grid's "
        f"hypervolume; a quarter of the grid is {grid_size / 4:g}: {verdict} the target"
    )


if __name__ == "__main__":
    main()
