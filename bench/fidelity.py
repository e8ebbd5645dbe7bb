"""Staged evaluation against full evaluation: what it saves, and whether it ever loses a front
point, for one sample and for a sample that grows in steps (racing).

Every configuration of a grid is computed once with the trial code (``bench.documents``): its
score on every document of the study's tasks, its KL, its perplexity, each step timed, kept in
``bench-results/documents-<records>.json``, so later runs only replay. Each rule of ``RULES``
(the full evaluation; one sample of a fraction or of N documents; racing in steps, with the
study's interval and with narrower ones; an exact stage 1, the bound no sample can beat) is
then replayed on those records (``bench.racing``), with the study's own draw, estimate,
interval and best case, in default-sampler (TPE) runs over seeds. Per grid, run length and
rule, ``bench-results/fidelity.json`` holds:

(a) ``front_points_stopped``: configurations on the grid's full-fidelity front that a replayed
    run stopped (target: none), and ``front_points_stoppable``: those whose best case at some
    step the grid's whole front dominates (the strongest front any search could hold);
    ``interval_held``: the share of steps whose interval held the full Sr.
(b) ``eval_s``: evaluation seconds per new configuration, its ``saving`` against the full
    evaluation, ``saving_range`` (the least and the most a seed's run saves against the same
    seed's full run) and the ``hypervolume`` the run's front reaches (relative to the grid's).
(c) Spearman rank correlation over the grid of ``kl`` (negated: lower is better) and of the
    first step's Sr estimate with the full Sr.

Grids: ``demo`` is bench-search's core grid on the demo model (77 configurations, tasks of 240
to 250 documents); ``smollm2`` is the paper grid of ``studies/smollm2-paper.yaml`` on
SmolLM2-135M (23 configurations; realtext_cloze, 399 documents, and perplexity);
``smollm2-search`` the space of ``studies/smollm2-search.yaml`` (41, sharing the paper grid's
records); ``smollm2-nextword`` the same 41 configurations on realtext_nextword, 3,978
documents (``studies/smollm2-nextword.yaml``). Every grid is replayed with TPE, whatever sampler
its study names.
Run: ``make bench-fidelity`` (``GRIDS="demo smollm2-nextword"``; computing SmolLM2's grids
takes about 5 minutes a configuration on 2 CPU cores, 3.5 hours for the next-word grid).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.progress import track
from rich.table import Table

from bench.documents import document_records
from bench.racing import FULL, Rule, bench_rules
from bench.search import CORE_GRID
from sweep.spec import SamplerSpec, SearchSpace, StudySpec, load_spec

RESULTS = Path("bench-results")
SPECS = {
    "demo": Path("studies/demo.yaml"),
    "smollm2": Path("studies/smollm2-paper.yaml"),
    "smollm2-search": Path("studies/smollm2-search.yaml"),
    "smollm2-nextword": Path("studies/smollm2-nextword.yaml"),
}
# the records file of each grid: grids of one study's model and tasks share one
RECORDS = {"demo": "demo", "smollm2": "smollm2", "smollm2-search": "smollm2",
           "smollm2-nextword": "smollm2-nextword"}  # fmt: skip
BOUND = "exact stage 1"  # the rule that bounds what any sample could save
TO_1600 = [50, 100, 200, 400, 800, 1600]  # the default steps
RULES = [
    Rule(FULL),
    Rule("one sample of 20%", [0.2]),  # the default before racing
    Rule("one sample of 100", [100]),
    Rule("one sample of 200", [200]),
    Rule("one sample of 400", [400]),
    Rule("racing 100, 200, 400", [100, 200, 400]),
    Rule("racing 50, 100, 200, 400", [50, 100, 200, 400]),
    Rule("racing 50, 100, 200, 400, 800, 1600", TO_1600),  # the default
    # narrower intervals than the default z (2.5): what they would save, and what they risk
    Rule("racing 50-1600, z 2.0", TO_1600, z=2.0),
    Rule("racing 50-1600, z 1.5", TO_1600, z=1.5),
    Rule(f"{BOUND} (50)", [50], exact=True),
]
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


def run_lengths(size: int) -> list[int]:
    """The new configurations a replayed run computes on a grid of ``size``: a small grid
    whole; a larger one half (a search whose budget is smaller than its space) and whole (how the
    saving grows as a run goes on and its front fills)."""
    return [size] if size <= SMALL_GRID else [size // 2, size]


def bench_grid(grid: str, seeds: int, console: Console) -> list[dict]:
    spec = bench_spec(grid)
    data = document_records(spec, RESULTS / f"documents-{RECORDS[grid]}.json", console)
    runs = run_lengths(len(data["records"]))
    return bench_rules(grid, data, spec, RULES, seeds, runs, track=_tracker(grid, console))


def _tracker(grid: str, console: Console):
    def tracked(items, description: str):
        return track(items, description=f"{grid}: {description}", console=console)

    return tracked


def summarise(rows: list[dict], console: Console) -> None:
    table = Table(title="staged vs full evaluation (medians over seeds)")
    columns = ("grid (documents)", "run", "rule", "new configs", "eval s / config", "saving",
               "HV vs grid", "stopped: sample, before ppl", "front pts stopped (run/worst)",
               "interval held", "Spearman KL, stage 1")  # fmt: skip
    for col in columns:
        table.add_column(col, justify="right")
    for r in rows:
        low, high = r["saving_range"]
        table.add_row(
            f"{r['grid']} ({r['task_documents']})", f"{r['run']}", r["mode"],
            f"{r['distinct']:g} ({r['trials']:g})", f"{r['eval_s']:.2f}",
            f"{r['saving']:.2f}x ({low:.2f}-{high:.2f})", f"{r['hypervolume']:.3f}",
            f"{r['stopped_share']:.0%}, {r['before_ppl_share']:.0%}",
            f"{r['front_points_stopped']} / {r['front_points_stoppable']} of {r['grid_front']}",
            f"{r['interval_held']:.0%}", f"{r['spearman_kl']:.2f}, {r['spearman_stage1']:.2f}",
        )  # fmt: skip
    console.print(table)


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
    # rows of other grids, from this benchmark's replay (not rows of an earlier one)
    rows = [r for r in kept if r["grid"] not in args.grids and "task_documents" in r] + mine
    summarise(rows, console)
    path.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
