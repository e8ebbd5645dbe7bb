"""Search efficiency: how fast each sampler finds the Pareto front of a fully computed grid.

Every configuration of a grid is computed once, with the study's own trial code, and kept in
``bench-results/search-grid.db`` (a ``sweep_results`` table), so later runs only replay. Each
sampler then runs against that table, a "trial" being a lookup, for several seeds. As in a study,
a budget counts new configurations (a configuration asked for again is told its result and
costs nothing); we report the hypervolume of the front after k new configurations relative to
the whole grid's, and the number of new configurations needed to reach 95% of it.

Three grids: ``demo`` is the demo study's whole space (every configuration ``make sweep`` can
propose), on which the default sampler must reach 95% within a quarter of the grid; ``core`` is
a smaller grid inside it (SparseGPT and GPTQ only), where one configuration holds almost all of
the hypervolume and the search is a hunt for it; ``non-uniform`` is the core grid with OWL's
sparsity profile and mixed bit-widths as further choices (``sweep.compress.profile``).

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

from sweep.evaluation.measurement import Measurement
from sweep.events import Events
from sweep.identity import ResultContext
from sweep.plan import make_plan
from sweep.results import ResultsTable
from sweep.run_loop import REPEAT_LIMIT
from sweep.space import all_configs, suggest_config
from sweep.spec import SamplerSpec, SearchSpace, StudySpec, load_spec

RESULTS = Path("bench-results")
SAMPLERS = ("tpe", "nsga2", "gp", "random")
# A grid inside the demo study's space: both patterns, both one-pass and two-step joint
# compression, every bit-width, sparsity in steps of 0.1; the best pruner and quantizer.
CORE_GRID = {
    "sparsity": {"low": 0.0, "high": 0.7, "step": 0.1},
    "patterns": ["unstructured", "2:4"],
    "prune_methods": ["sparsegpt"],
    "quant_methods": ["gptq"],
    "bits": [2, 3, 4, 8, 16],
    "orders": ["prune_first", "joint"],
    "cases": ["B"],
}
# The core grid with non-uniform compression: OWL's profile and mixed bit-widths as choices.
NON_UNIFORM_GRID = {
    **CORE_GRID,
    "profiles": ["uniform", "owl"],
    "allocations": ["uniform", "mixed"],
}
GRIDS = {"demo": None, "core": CORE_GRID, "non-uniform": NON_UNIFORM_GRID}


def hypervolume_2d(points: list[tuple[float, float]], ref: tuple[float, float] = (0.0, 0.0)):
    """Area dominated by ``points`` (both coordinates maximised) and bounded below by ``ref``."""
    area, top_y = 0.0, ref[1]
    for x, y in sorted(points, key=lambda p: (-p[0], -p[1])):
        if x > ref[0] and y > top_y:
            area += (x - ref[0]) * (y - top_y)
            top_y = y
    return area


def add_to_front(front: list[tuple[float, float]], point: tuple[float, float]) -> None:
    """Insert ``point`` into the non-dominated set ``front`` (both coordinates maximised)."""
    if any(x >= point[0] and y >= point[1] for x, y in front):
        return
    front[:] = [p for p in front if not (point[0] >= p[0] and point[1] >= p[1])]
    front.append(point)


def bench_spec(grid: str) -> StudySpec:
    demo = load_spec(Path("studies/demo.yaml"))
    update: dict = {"name": "bench-search"}
    if GRIDS[grid] is not None:
        update["search"] = SearchSpace(**GRIDS[grid])
    return demo.model_copy(update=update)


def compute_grid(spec: StudySpec, db: Path, console: Console) -> dict[str, tuple[float, ...]]:
    """Objective values of every grid configuration, computing only those not yet stored."""
    from sweep.workers import prepare_runner

    results = ResultsTable(f"sqlite:///{db}")
    values: dict[str, tuple[float, ...]] = {}
    with prepare_runner(spec, Events(), progress=False) as runner:
        context = ResultContext.of(spec, runner.fingerprints)
        configs = sorted(all_configs(spec.search), key=lambda c: c.key())
        base = runner.evaluate_base()
        for config in track(configs, description="computing the grid", console=console):
            rkey = context.key(config)
            claim = results.claim(rkey, config.key(), context.fields, spec.name, -1)
            if claim.owned:
                measurement = runner.run(config, base).measurement
                results.finish(rkey, measurement.to_dict())
            else:
                measurement = Measurement.from_dict(claim.result)
            values[config.key()] = tuple(float(measurement.value(o)) for o in spec.objectives)
    return values


def replay(
    spec: StudySpec, sampler: str, seed: int, table: dict[str, tuple[float, ...]], n: int
) -> tuple[list[float], list[str]]:
    """Replay a study that computes ``n`` new configurations, as `sweep run --trials n` does:
    the hypervolume of the sampler's front after each new configuration, and every
    configuration asked for, in order. A repeat is told its stored result (it teaches the
    sampler, as a reused trial does) but is not a new configuration; like a worker, the replay
    gives up after ``REPEAT_LIMIT`` repeats in a row."""
    spec = spec.model_copy(update={"sampler": SamplerSpec(name=sampler, seed=seed)})
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        directions=["maximize"] * len(spec.objectives), sampler=make_plan(spec).sampler
    )
    front: list[tuple[float, float]] = []
    curve: list[float] = []
    keys: list[str] = []
    seen: set[str] = set()
    repeats = 0
    while len(seen) < n and repeats < REPEAT_LIMIT:
        trial = study.ask()
        keys.append(suggest_config(trial, spec.search).key())
        values = table[keys[-1]]
        study.tell(trial, values)
        if keys[-1] in seen:
            repeats += 1
            continue
        repeats = 0
        seen.add(keys[-1])
        add_to_front(front, values[:2])
        curve.append(hypervolume_2d(front))
    return curve, keys


def _at(curve: list[float], k: int) -> float:
    """The hypervolume after ``k`` new configurations (the last one if the replay stopped)."""
    return curve[min(k, len(curve)) - 1]


def bench_grid(grid: str, samplers: list[str], seeds: int, console: Console) -> list[dict]:
    """Rows (one per sampler and seed) for one grid, replayed up to half the grid's trials."""
    spec = bench_spec(grid)
    table = compute_grid(spec, RESULTS / "search-grid.db", console)
    grid_size = len(table)
    full = hypervolume_2d([v[:2] for v in table.values()])
    quarter, half = grid_size // 4, grid_size // 2
    rows = []
    for sampler in samplers:
        for seed in track(range(seeds), description=f"{grid}: {sampler}", console=console):
            curve, keys = replay(spec, sampler, seed, table, half)
            reached = [k + 1 for k, hv in enumerate(curve) if hv >= 0.95 * full]
            first_new = {}  # new configuration number -> trials asked until then
            for asked, key in enumerate(keys, start=1):
                first_new.setdefault(key, asked)
            asks = sorted(first_new.values())
            rows.append(
                {
                    "grid": grid,
                    "sampler": sampler,
                    "seed": seed,
                    "configs_to_95": reached[0] if reached else None,
                    "trials_to_95": asks[reached[0] - 1] if reached else None,
                    "grid_size": grid_size,
                    "hv_ratio_at_quarter": _at(curve, quarter) / full,
                    "hv_ratio_at_half": _at(curve, half) / full,
                    "trials_for_quarter": asks[min(quarter, len(asks)) - 1],
                }
            )
    return rows


def summarise(rows: list[dict], default: str, console: Console) -> dict[str, float]:
    """Print one grid's table; return each sampler's median new configurations to 95% (half
    the grid plus one for a seed that never got there)."""
    grid_size = rows[0]["grid_size"]
    half = grid_size // 2
    out = Table(title=f"{rows[0]['grid']} grid: {grid_size} configurations")
    columns = ("sampler", "median new configs to 95%", "worst", "HV at n/4", "HV at n/2",
               "trials asked for n/4")  # fmt: skip
    for col in columns:
        out.add_column(col, justify="right")
    medians = {}
    for sampler in dict.fromkeys(r["sampler"] for r in rows):
        mine = [r for r in rows if r["sampler"] == sampler]
        needed = [r["configs_to_95"] or half + 1 for r in mine]
        medians[sampler] = statistics.median(needed)
        out.add_row(
            sampler + (" (default)" if sampler == default else ""),
            f"{medians[sampler]:g}" if medians[sampler] <= half else f"> {half}",
            str(max(needed)) if max(needed) <= half else f"> {half}",
            f"{statistics.median(r['hv_ratio_at_quarter'] for r in mine):.3f}",
            f"{statistics.median(r['hv_ratio_at_half'] for r in mine):.3f}",
            f"{statistics.median(r['trials_for_quarter'] for r in mine):g}",
        )
    console.print(out)
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS))
    parser.add_argument("--grids", nargs="+", default=list(GRIDS), choices=list(GRIDS))
    args = parser.parse_args()
    console = Console()
    RESULTS.mkdir(exist_ok=True)
    default = load_spec(Path("studies/demo.yaml")).sampler.name
    path = RESULTS / "search.json"
    kept = json.loads(path.read_text()) if path.exists() else []
    rows = [r for r in kept if r["grid"] not in args.grids]
    for grid in args.grids:
        mine = bench_grid(grid, args.samplers, args.seeds, console)
        rows += mine
        medians = summarise(mine, default, console)
        if default not in medians:
            continue
        median, grid_size = medians[default], mine[0]["grid_size"]
        verdict = "meets" if median <= grid_size / 4 else "misses"
        target = " (the target)" if grid == "demo" else ""
        console.print(
            f"{grid}{target}: default sampler {default} needs a median of {median:g} new "
            f"configurations to reach 95% of the grid's hypervolume; a quarter of the grid is "
            f"{grid_size / 4:g}: it {verdict} the quarter"
        )
    path.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
