"""Staged evaluation replayed on per-document records (``bench.documents``): one sample or a
sample that grows in steps (racing), against the full evaluation, on a task of realistic size.

Each rule's stage-1 estimates are those a study computes: the same seeded draw
(``draw_sample``), the same paired estimate and interval (``estimate``, ``sr_bounds``), the
same best case (``optimistic``), taken on the configuration's real per-document scores. A step
costs what its documents cost in a full pass (seconds per document, the grid's median pass:
``Costs``), plus lm-eval's fixed cost of a call; stage 0 costs the KL pass.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace

import optuna
import pandas as pd

from bench.search import add_to_front, hypervolume_2d
from sweep.compress import CompressionConfig
from sweep.evaluation.measurement import Measurement, Stage
from sweep.evaluation.sample import SampleSize, TaskSample, draw_sample, estimate
from sweep.evaluation.stages import dominated_by, optimistic, sr_bounds
from sweep.metrics import srcr
from sweep.plan import make_plan
from sweep.run_loop import REPEAT_LIMIT
from sweep.space import suggest_config
from sweep.spec import SamplerSpec, StudySpec

FULL = "full"
Values = tuple[float, ...]


@dataclass(frozen=True)
class Rule:
    """How stage 1 samples: ``steps`` (one size, or several: racing); ``exact`` gives every
    step the exact Sr (an interval of width zero) at the first step's cost: the bound no
    sample can beat; ``z``: the interval's half-width in standard errors, where not the
    study's. No steps: the full evaluation (a study with stages off)."""

    name: str
    steps: Sequence[SampleSize] = ()
    exact: bool = False
    z: float | None = None

    def interval_z(self, spec: StudySpec) -> float:
        return spec.evaluation.stages.z if self.z is None else self.z


@dataclass(frozen=True)
class Step:
    """A configuration after one step of stage 1: its values as told to the sampler if it
    stops there, its best case, the seconds spent so far, and its Sr interval."""

    told: Values
    best: Values
    seconds: float
    sr: float
    sr_low: float
    sr_high: float


@dataclass(frozen=True)
class Schedule:
    """A configuration under one rule: its steps; its exact values, and their cost if it stops
    before its perplexity (``tasks_seconds``; None without a perplexity task: then it never
    does) and if it goes on to the end."""

    steps: list[Step]
    full: Values
    full_seconds: float
    tasks_seconds: float | None = None


def _values(m: Measurement, objectives: Sequence[str]) -> Values:
    return tuple(float(m.value(o)) for o in objectives)


def task_documents(data: dict) -> int:
    """Documents the grid's tasks hold, over every task and leaf."""
    tasks = data["base"]["documents"].values()
    return sum(len(docs) for leaves in tasks for docs in leaves.values())


def full_values(data: dict, spec: StudySpec) -> dict[str, Values]:
    """Each configuration's exact values on the study's objectives."""
    return {
        k: _values(Measurement.from_dict(r["full"]), spec.objectives)
        for k, r in data["records"].items()
    }


def task_samples(data: dict, steps: Sequence[SampleSize], min_docs: int, seed: int) -> dict:
    """Each task's sample as a study of this rule draws it, from the base model's documents."""
    return {
        task: draw_sample(
            {leaf: dict(enumerate(scores)) for leaf, scores in leaves.items()},
            list(steps), min_docs, seed,
        )
        for task, leaves in data["base"]["documents"].items()
    }  # fmt: skip


@dataclass(frozen=True)
class Costs:
    """Seconds of one configuration's passes: every configuration is charged the grid's
    medians, as a compressed model's forward pass costs what the base model's does (its weights
    stay dense in memory), and a median is not moved by another job's load on a shared machine
    during one configuration's pass."""

    eval_s: float  # the tasks' full pass
    kl_s: float
    perplexity_s: float
    call_s: float  # lm-eval's fixed cost of a call

    @classmethod
    def of(cls, data: dict) -> Costs:
        records = list(data["records"].values())

        def median(name: str) -> float:
            return statistics.median(r.get(name, 0.0) for r in records) if records else 0.0

        return cls(median("eval_s"), median("kl_s"), median("perplexity_s"), data["base"]["call_s"])


def schedule(
    record: dict, data: dict, samples: dict[str, TaskSample], rule: Rule, spec: StudySpec,
    costs: Costs,
) -> Schedule:  # fmt: skip
    """What ``rule`` does with one configuration's record."""
    base = data["base"]
    full = Measurement.from_dict(record["full"])
    config = CompressionConfig(**record["config"])
    objectives = list(spec.objectives)
    population = task_documents(data)
    call_s = costs.call_s
    per_doc = max(0.0, costs.eval_s - call_s) / population
    ppl_s = costs.perplexity_s
    if not rule.steps:
        return Schedule([], _values(full, objectives), costs.eval_s + ppl_s)
    capacity = full.capacity
    steps, seconds, seen = [], costs.kl_s, 0
    n_steps = max(s.steps for s in samples.values())
    scored = {
        task: {leaf: dict(enumerate(d)) for leaf, d in leaves.items()}
        for task, leaves in record["documents"].items()
    }
    for k in range(n_steps if not rule.exact else 1):
        size = sum(s.step(k).size for s in samples.values())
        seconds += call_s * len(samples) + (size - seen) * per_doc
        seen = size
        if rule.exact:
            point = low = high = full.sr
        else:
            estimates = {task: estimate(s.step(k), scored[task]) for task, s in samples.items()}
            z = rule.interval_z(spec)
            point, low, high = sr_bounds(estimates, base["tasks"], base["random"], z)
        told = replace(full, sr=point, srcr=srcr(point, capacity), stage=Stage.SAMPLE,
                       sr_low=low, sr_high=high, perplexity=None)  # fmt: skip
        best = _values(optimistic(told, config), objectives)
        steps.append(Step(_values(told, objectives), best, seconds, point, low, high))
    tasks_s = seconds + (population - seen) * per_doc + call_s * len(samples)
    with_ppl = spec.evaluation.perplexity_task is not None
    return Schedule(
        steps, _values(full, objectives), tasks_s + ppl_s, tasks_s if with_ppl else None
    )


def schedules(data: dict, rule: Rule, spec: StudySpec) -> dict[str, Schedule]:
    stages = spec.evaluation.stages
    samples = task_samples(data, rule.steps or [0.2], stages.min_docs, stages.seed)
    costs = Costs.of(data)
    return {
        key: schedule(r, data, samples, rule, spec, costs) for key, r in data["records"].items()
    }


def replay(spec: StudySpec, plans: dict[str, Schedule], seed: int, n: int) -> dict:
    """A default-sampler (TPE) run of ``n`` new configurations, each told what ``plans`` says:
    its estimate where its best case is dominated by the run's front at a step, else its exact
    values: stopped before its perplexity if the front dominates them, else joining the front."""
    spec = spec.model_copy(update={"sampler": SamplerSpec(name=spec.sampler.name, seed=seed)})
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        directions=["maximize"] * len(spec.objectives), sampler=make_plan(spec).sampler
    )
    front: list[tuple[float, float]] = []
    told: dict[str, Values] = {}
    seconds, stopped, before_ppl, asked, repeats = 0.0, [], [], 0, 0
    while len(told) < n and repeats < REPEAT_LIMIT:
        trial = study.ask()
        asked += 1
        key = suggest_config(trial, spec.search).key()
        if key in told:
            study.tell(trial, told[key])
            repeats += 1
            continue
        repeats = 0
        plan = plans[key]
        at = next((s for s in plan.steps if dominated_by(s.best, front)), None)
        if at is not None:
            told[key], cost = at.told, at.seconds
            stopped.append(key)
        elif plan.tasks_seconds is not None and dominated_by(plan.full, front):
            told[key], cost = plan.full, plan.tasks_seconds
            before_ppl.append(key)
        else:
            told[key], cost = plan.full, plan.full_seconds
            add_to_front(front, told[key][:2])
        seconds += cost
        study.tell(trial, told[key])
    return {
        "trials": asked,
        "distinct": len(told),
        "eval_s": seconds / max(1, len(told)),
        "hypervolume": hypervolume_2d(front),
        "stopped": stopped,
        "before_ppl": before_ppl,
    }


def interval_check(data: dict, plans: dict[str, Schedule]) -> dict[str, float]:
    """How each step's interval did over the grid: the share of configurations whose full Sr it
    held, its median width at the first step, and the Spearman rank correlations with the full
    Sr of the first step's estimate and of the KL proxy (negated: lower is better)."""
    held, widths = [], []
    for key, plan in plans.items():
        sr = data["records"][key]["full"]["sr"]
        held += [s.sr_low - 1e-12 <= sr <= s.sr_high + 1e-12 for s in plan.steps]
        if plan.steps:
            widths.append(plan.steps[0].sr_high - plan.steps[0].sr_low)
    keys = list(plans)
    frame = pd.DataFrame(
        {
            "sr": [data["records"][k]["full"]["sr"] for k in keys],
            "neg_kl": [-(data["records"][k]["full"].get("kl") or 0.0) for k in keys],
            "stage1": [p.steps[0].sr if p.steps else float("nan") for p in plans.values()],
        }
    )
    return {
        "interval_held": sum(held) / len(held) if held else 1.0,
        "first_width": statistics.median(widths) if widths else 0.0,
        "spearman_kl": float(frame["neg_kl"].corr(frame["sr"], method="spearman")),
        "spearman_stage1": float(frame["stage1"].corr(frame["sr"], method="spearman")),
    }


def bench_rules(grid: str, data: dict, spec: StudySpec, rules: Sequence[Rule], seeds: int,
                runs: Sequence[int] = (), track=lambda it, **_: it) -> list[dict]:  # fmt: skip
    """Rows for ``grid``: every rule replayed over ``seeds`` runs of each length in ``runs``
    (default: as long as the grid); the first rule is the full evaluation, which the others'
    savings are measured against."""
    if not rules or rules[0].name != FULL:
        raise ValueError(f"the first rule must be {FULL!r}: the others are measured against it")
    values = full_values(data, spec)
    on_front = {k for k, v in values.items() if not dominated_by(v, values.values())}
    front_values = [values[k] for k in on_front]
    grid_hv = hypervolume_2d([v[:2] for v in front_values])
    population = task_documents(data)
    plans = {rule.name: schedules(data, rule, spec) for rule in rules}
    checks = {name: interval_check(data, p) for name, p in plans.items()}
    # front configurations whose best case at some step the grid's whole front dominates
    stoppable = {
        name: sum(any(dominated_by(s.best, front_values) for s in p[k].steps) for k in on_front)
        for name, p in plans.items()
    }
    rows = []
    for n in runs or [len(data["records"])]:
        full_costs: list[float] = []
        for rule in rules:
            label = f"{rule.name}, runs of {n}"
            done = [replay(spec, plans[rule.name], seed, n)
                    for seed in track(range(seeds), description=label)]  # fmt: skip
            costs = [r["eval_s"] for r in done]
            if rule.name == FULL:
                full_costs = costs
            savings = [f / c for f, c in zip(full_costs, costs, strict=True)]
            stopped_front = sorted(
                {k for r in done for k in r["stopped"] + r["before_ppl"] if k in on_front}
            )
            rows.append(
                {
                    "grid": grid,
                    "task_documents": population,
                    "run": n,
                    "mode": rule.name,
                    "sample": list(rule.steps),
                    "z": rule.interval_z(spec),
                    "trials": statistics.median(r["trials"] for r in done),
                    "distinct": statistics.median(r["distinct"] for r in done),
                    "eval_s": statistics.median(costs),
                    "saving": statistics.median(full_costs) / statistics.median(costs),
                    "saving_range": [min(savings), max(savings)],
                    "hypervolume": statistics.median(r["hypervolume"] for r in done) / grid_hv,
                    "front_points_stopped": len(stopped_front),
                    "front_points_stoppable": stoppable[rule.name],
                    "stopped_share": statistics.median(
                        len(r["stopped"]) / r["distinct"] for r in done
                    ),
                    "before_ppl_share": statistics.median(
                        len(r["before_ppl"]) / r["distinct"] for r in done
                    ),
                    "grid_size": len(data["records"]),
                    "grid_front": len(on_front),
                    "seeds": seeds,
                    **checks[rule.name],
                }
            )
    return rows
