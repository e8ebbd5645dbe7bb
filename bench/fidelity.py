"""Staged evaluation against full evaluation: what it saves, and whether it ever loses a front
point.

Every configuration of a grid is computed once with the study's own trial code, in stages that
never stop (so that each has its KL, its stage-1 estimate and its full measurement), and its
evaluation also timed in full, as a study without stages runs it. The records are kept in
``bench-results/fidelity-<grid>.json``, so later runs only replay. Then:

(a) ``front_points_stopped``: configurations on the grid's full-fidelity front whose best case
    (Sr at the top of its stage-1 interval) the grid's front dominates, i.e. that staged
    evaluation would stop under the strongest front any search could hold (target: none); and
    those a replayed staged search did stop.
(b) ``eval_s``: evaluation seconds per new configuration over default-sampler (TPE) runs, staged
    vs full, each run telling the sampler what a study would (a trial stopped after its sample,
    its estimate; one stopped before its perplexity, its exact values), with the hypervolume
    each run's full-fidelity front reaches (relative to the grid's). A stopped trial costs the
    stages it ran, as timed on its configuration: KL and sample, or those and the rest of the
    tasks' documents. ``saving_range``: the least and the most a seed's staged run saves against
    the same seed's full run.
(c) Spearman rank correlation over the grid of ``kl`` (negated: lower is better) and of the
    stage-1 Sr estimate with the full Sr.

Grids: ``demo`` is bench-search's core grid on the demo model (77 configurations);
``smollm2`` is the paper grid of ``studies/smollm2-paper.yaml`` on SmolLM2-135M (23
configurations, hours on a CPU), which a run of 23 computes whole; ``smollm2-search`` is the
space of ``studies/smollm2-search.yaml``, that grid with 75% sparsity and the 2:4 pattern besides
(41 configurations, the paper grid's records and 18 more), which runs of 20 search, as a study
searches a space larger than its budget, and runs of 41 compute whole (``run_lengths``). Every
grid is replayed with TPE, whatever sampler its study names.
Run: ``make bench-fidelity`` (``GRIDS="demo smollm2 smollm2-search"`` for all).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path

import optuna
import pandas as pd
from rich.console import Console
from rich.progress import track
from rich.table import Table

from bench.documents import document_records
from bench.racing import FULL, Rule, bench_rules
from bench.search import CORE_GRID, add_to_front, hypervolume_2d
from sweep.compress import CompressionConfig
from sweep.evaluation.measurement import Measurement
from sweep.evaluation.stages import dominated_by, optimistic
from sweep.events import Events
from sweep.plan import make_plan
from sweep.run_loop import REPEAT_LIMIT
from sweep.space import all_configs, suggest_config
from sweep.spec import SamplerSpec, SearchSpace, StudySpec, load_spec

RESULTS = Path("bench-results")
SPECS = {
    "demo": Path("studies/demo.yaml"),
    "smollm2": Path("studies/smollm2-paper.yaml"),
    "smollm2-search": Path("studies/smollm2-search.yaml"),
    "smollm2-nextword": Path("studies/smollm2-nextword.yaml"),
}
BOUND = "exact stage 1"  # the replay mode that bounds what any sample could save
# grids replayed from per-document records (bench.documents, bench.racing): every sample size
# and racing rule from one computation
DOCUMENT_GRIDS = {"smollm2-nextword"}
RULES = [
    Rule(FULL),
    Rule("one sample of 20%", [0.2]),
    Rule("one sample of 100", [100]),
    Rule("one sample of 200", [200]),
    Rule("one sample of 400", [400]),
    Rule("racing 100, 200, 400", [100, 200, 400]),
    Rule("racing 50, 100, 200, 400", [50, 100, 200, 400]),
    Rule(BOUND + " (100)", [100], exact=True),
]
PART_OF = {"smollm2-search": "smollm2"}  # a grid whose records another grid's file holds in part
SMALL_GRID = 24  # configurations: a grid this small is replayed whole only


def bench_spec(grid: str) -> StudySpec:
    """The grid's study with stages on, no configurations put first, and the default sampler
    (TPE), whatever sampler the study itself names (the paper grid's is the grid sampler)."""
    spec = load_spec(SPECS[grid])
    evaluation = spec.evaluation.model_copy(
        update={"stages": spec.evaluation.stages.model_copy(update={"mode": "on"})}
    )
    search = SearchSpace(**CORE_GRID) if grid == "demo" else spec.search
    return spec.model_copy(
        update={
            "name": f"bench-fidelity-{grid}",
            "evaluation": evaluation,
            "search": search.model_copy(update={"first": []}),
            "sampler": SamplerSpec(name="tpe", seed=0),
        }
    )


def grid_records(grid: str, console: Console) -> dict[str, dict]:
    """Every configuration of ``grid`` with its record; a grid that holds another (``PART_OF``)
    takes that grid's records and computes only its own others."""
    spec = bench_spec(grid)
    inner = PART_OF.get(grid)
    records = grid_records(inner, console) if inner else {}
    records |= compute_grid(spec, RESULTS / f"fidelity-{grid}.json", console, skip=set(records))
    return records


def compute_grid(
    spec: StudySpec, path: Path, console: Console, skip: set[str] = frozenset()
) -> dict[str, dict]:
    """One record per configuration but those in ``skip``: its full and estimated measurements
    and their timings; only the configurations not yet in ``path`` (for this model, tasks and
    stages' settings) are computed."""
    from sweep.workers import prepare_runner

    stored = json.loads(path.read_text()) if path.exists() else {}
    with prepare_runner(spec, Events(), progress=False) as runner:
        # the stages' settings too: a KL over other tokens, or another sample, is another record
        stages = spec.evaluation.stages.model_dump(mode="json", exclude={"mode"})
        context = [runner.fingerprints.model_dump(), stages]
        records = stored.get("records", {}) if stored.get("context") == context else {}
        configs = sorted(all_configs(spec.search), key=lambda c: c.key())
        configs = [c for c in configs if c.key() not in skip]
        todo = [c for c in configs if c.key() not in records]
        base = runner.evaluate_base() if todo else None
        for config in track(todo, description="computing the grid", console=console):
            assert base is not None
            estimated: list[Measurement] = []

            def goes_on(m: Measurement, seen: list[Measurement] = estimated) -> bool:
                seen.append(m)
                return False

            staged = runner.run(config, base, stop=goes_on).measurement
            t = time.perf_counter()
            runner.evaluator.score()  # the model still holds the compressed weights
            full_eval_s = time.perf_counter() - t
            stage1_s = staged.timings["kl_s"] + staged.timings["sample_s"]
            records[config.key()] = {
                "config": config.to_dict(),
                "full": staged.to_dict(),
                "estimated": estimated[0].to_dict(),
                "eval_full_s": full_eval_s,
                "eval_stage1_s": stage1_s,
                "eval_tasks_s": stage1_s + staged.timings["rest_s"],
                "eval_staged_full_s": staged.timings["evaluate_s"],
            }
            path.write_text(json.dumps({"context": context, "records": records}, indent=1))
    return {c.key(): records[c.key()] for c in configs}


def _values(m: Measurement, objectives: list[str]) -> tuple[float, ...]:
    return tuple(float(m.value(o)) for o in objectives)


def replay(
    spec: StudySpec, records: dict[str, dict], staged: bool, seed: int, n: int
) -> dict[str, float]:
    """A default-sampler run that computes ``n`` new configurations, full or staged."""
    spec = spec.model_copy(update={"sampler": SamplerSpec(name=spec.sampler.name, seed=seed)})
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        directions=["maximize"] * len(spec.objectives), sampler=make_plan(spec).sampler
    )
    front: list[tuple[float, float]] = []
    told: dict[str, tuple[float, ...]] = {}
    eval_s, stopped, before_ppl, asked, repeats = 0.0, [], [], 0, 0
    with_ppl = spec.evaluation.perplexity_task is not None
    while len(told) < n and repeats < REPEAT_LIMIT:
        trial = study.ask()
        asked += 1
        key = suggest_config(trial, spec.search).key()
        if key in told:
            study.tell(trial, told[key])
            repeats += 1
            continue
        repeats = 0
        r = records[key]
        full = Measurement.from_dict(r["full"])
        estimated = Measurement.from_dict(r["estimated"])
        config = CompressionConfig(**r["config"])
        best = _values(optimistic(estimated, config), spec.objectives)
        if staged and dominated_by(best, front):
            told[key] = _values(estimated, spec.objectives)
            eval_s += r["eval_stage1_s"]
            stopped.append(key)
        elif staged and with_ppl and dominated_by(_values(full, spec.objectives), front):
            told[key] = _values(full, spec.objectives)  # exact, stopped before its perplexity
            eval_s += r["eval_tasks_s"]
            before_ppl.append(key)
        else:
            told[key] = _values(full, spec.objectives)
            eval_s += r["eval_staged_full_s"] if staged else r["eval_full_s"]
            add_to_front(front, told[key][:2])
        study.tell(trial, told[key])
    return {
        "trials": asked,
        "distinct": len(told),
        "eval_s": eval_s / max(1, len(told)),
        "hypervolume": hypervolume_2d(front),
        "stopped": stopped,
        "before_ppl": before_ppl,
    }


def exact_stage1(records: dict[str, dict]) -> dict[str, dict]:
    """The records as if stage 1 measured the exact Sr (an interval of width zero): what no
    sample can beat, so a replay of them bounds what staged evaluation can save on a grid."""
    out = {}
    for key, r in records.items():
        full = r["full"]
        exact = {**r["estimated"], "sr": full["sr"], "srcr": full["srcr"]}
        exact.update(sr_low=full["sr"], sr_high=full["sr"], task_scores=full["task_scores"])
        out[key] = {**r, "estimated": exact}
    return out


def grid_front(records: dict[str, dict], objectives: list[str]) -> list[str]:
    """Keys of the configurations on the grid's full-fidelity front."""
    values = {k: _values(Measurement.from_dict(r["full"]), objectives) for k, r in records.items()}
    return [k for k, v in values.items() if not dominated_by(v, values.values())]


def run_lengths(size: int) -> list[int]:
    """The new configurations a replayed run computes on a grid of ``size``: a small grid
    whole; a larger one half (a search whose budget is smaller than its space) and whole (how the
    saving grows as a run goes on and its front fills)."""
    return [size] if size <= SMALL_GRID else [size // 2, size]


def bench_grid(grid: str, seeds: int, console: Console) -> list[dict]:
    spec = bench_spec(grid)
    if grid in DOCUMENT_GRIDS:
        data = document_records(spec, RESULTS / f"documents-{grid}.json", console)
        return bench_rules(grid, data, spec, RULES, seeds, track=_tracker(grid, console))
    records = grid_records(grid, console)

    objectives = list(spec.objectives)
    full = {k: Measurement.from_dict(r["full"]) for k, r in records.items()}
    estimated = {k: Measurement.from_dict(r["estimated"]) for k, r in records.items()}
    on_front = grid_front(records, objectives)
    front_values = [_values(full[k], objectives) for k in on_front]
    worst_case = [
        k
        for k in on_front
        if dominated_by(
            _values(
                optimistic(estimated[k], CompressionConfig(**records[k]["config"])), objectives
            ),
            front_values,
        )  # fmt: skip
    ]
    grid_hv = hypervolume_2d([v[:2] for v in front_values])
    frame = pd.DataFrame(
        {
            "sr": [full[k].sr for k in records],
            "neg_kl": [-(full[k].kl or 0.0) for k in records],
            "stage1": [estimated[k].sr for k in records],
        }
    )
    spearman_kl = float(frame["neg_kl"].corr(frame["sr"], method="spearman"))
    spearman_stage1 = float(frame["stage1"].corr(frame["sr"], method="spearman"))
    rows = []
    modes = {"full": records, "staged": records, BOUND: exact_stage1(records)}
    full_eval_s: dict[int, list[float]] = {}  # run length -> each seed's full-evaluation cost
    for n, (mode, told) in itertools.product(run_lengths(len(records)), modes.items()):
        runs = [
            replay(spec, told, mode != "full", seed, n)
            for seed in track(range(seeds), description=f"{grid}, {n}: {mode}", console=console)
        ]
        eval_s = [r["eval_s"] for r in runs]
        if mode == "full":
            full_eval_s[n] = eval_s
        # the same seed's full run against this one: how much the saving varies with the seed
        savings = [f / e for f, e in zip(full_eval_s[n], eval_s, strict=True)]
        stopped_front = sorted(
            {k for r in runs for k in r["stopped"] + r["before_ppl"] if k in on_front}
        )
        rows.append(
            {
                "grid": grid,
                "run": n,
                "mode": mode,
                "trials": statistics.median(r["trials"] for r in runs),
                "distinct": statistics.median(r["distinct"] for r in runs),
                "eval_s": statistics.median(eval_s),
                "saving_range": [min(savings), max(savings)],
                "hypervolume": statistics.median(r["hypervolume"] for r in runs) / grid_hv,
                "front_points_stopped": len(stopped_front) if mode != "full" else 0,
                "front_points_stoppable": len(worst_case) if mode == "staged" else 0,
                "stopped_share": statistics.median(len(r["stopped"]) / r["distinct"] for r in runs),
                "before_ppl_share": statistics.median(
                    len(r["before_ppl"]) / r["distinct"] for r in runs
                ),
                "spearman_kl": spearman_kl,
                "spearman_stage1": spearman_stage1,
                "grid_size": len(records),
                "grid_front": len(on_front),
                "seeds": seeds,
            }
        )
    return rows


def _tracker(grid: str, console: Console):
    def tracked(items, description: str):
        return track(items, description=f"{grid}: {description}", console=console)

    return tracked


def summarise(rows: list[dict], console: Console) -> None:
    table = Table(title="staged vs full evaluation (medians over seeds)")
    columns = ("grid", "run", "mode", "new configs", "trials", "eval s / config", "HV vs grid",
               "stopped: sample, before ppl", "front pts stopped (run/worst)",
               "Spearman KL, stage 1")  # fmt: skip
    for col in columns:
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["grid"], f"{r.get('run', '')}", r["mode"], f"{r['distinct']:g}", f"{r['trials']:g}",
            f"{r['eval_s']:.2f}",
            f"{r['hypervolume']:.3f}",
            f"{r['stopped_share']:.0%}, {r.get('before_ppl_share', 0.0):.0%}",
            f"{r['front_points_stopped']} / {r['front_points_stoppable']} of {r['grid_front']}",
            f"{r['spearman_kl']:.2f}, {r['spearman_stage1']:.2f}",
        )  # fmt: skip
    console.print(table)
    for grid, run in dict.fromkeys((r["grid"], r.get("run")) for r in rows):
        mine = {r["mode"]: r for r in rows if r["grid"] == grid and r.get("run") == run}
        if "staged" not in mine:  # a grid of per-document records: one line per rule
            for mode, r in mine.items():
                if mode != "full":
                    console.print(
                        f"{grid} ({r['task_documents']} documents), runs of {run}, {mode}: "
                        f"{r['saving']:.2f}x less evaluation per new config "
                        f"({r['saving_range'][0]:.2f}-{r['saving_range'][1]:.2f}x), hypervolume "
                        f"{r['hypervolume']:.3f} vs {mine['full']['hypervolume']:.3f}, "
                        f"{r['front_points_stopped']} front configs stopped; interval held "
                        f"{r['interval_held']:.0%}, first width {r['first_width']:.3f}"
                    )
            continue
        ratio = mine["full"]["eval_s"] / mine["staged"]["eval_s"]
        bound = f"; with an exact stage 1, {mine['full']['eval_s'] / mine[BOUND]['eval_s']:.2f}x"
        low, high = mine["staged"].get("saving_range", (ratio, ratio))
        console.print(
            f"{grid}, runs of {run}: staged evaluation costs {ratio:.2f}x less per new config"
            f" ({low:.2f}-{high:.2f}x over seeds)"
            f"{bound if BOUND in mine else ''}; hypervolume {mine['staged']['hypervolume']:.3f} "
            f"staged vs {mine['full']['hypervolume']:.3f} full"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--grids", nargs="+", default=["demo"], choices=sorted(SPECS))
    args = parser.parse_args()
    console = Console()
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "fidelity.json"
    mine = [row for grid in args.grids for row in bench_grid(grid, args.seeds, console)]
    # read only now: another run may have written its grids' rows meanwhile
    kept = json.loads(path.read_text()) if path.exists() else []
    rows = [r for r in kept if r["grid"] not in args.grids] + mine
    summarise(rows, console)
    path.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
