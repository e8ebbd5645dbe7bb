"""Stage 1 of a trial's evaluation: each task scored on a fixed, seeded random sample of its
documents, and the full-set score estimated with a confidence interval.

The sample of every task is drawn once per study (``draw_sample``) and is the same for every
trial, so trials are compared on the same questions. lm-eval's ``--limit`` would take the first
N documents, which biases; a sample is given to lm-eval as document indices instead.

The estimate is *paired*: the base model's score on every sampled document is known, so what is
estimated is the mean change from the base model over the whole task,
``a(compressed) = a(base) + mean_i (c_i - b_i)``. A compressed model that agrees with its base
on most documents has a small variance of ``c_i - b_i``, and a far tighter interval than the
sampled accuracy alone would give. Leaves of a task group are strata: each is sampled at the
same fraction and the estimate is the document-weighted (pooled) mean, with the finite
population correction.

The sample can grow in steps (``sample: [100, 200, 400]``, racing): each step's documents are
the first ones of one seeded random draw, so every step is itself a simple random sample and
holds the steps before it; a trial that is not yet dominated scores only the step's new
documents.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sweep.spec import StagesSpec


@dataclass(frozen=True)
class LeafSample:
    """One lm-eval task (a leaf) of a study's task: how many documents it has, the indices of
    those sampled (sorted within each step), the base model's per-document score on them, its
    total over all documents, and how many of ``ids`` each step has seen (``steps``; one step
    of all of them when absent, as samples stored before racing)."""

    population: int
    ids: list[int]
    base: list[float]
    base_total: float
    steps: list[int] | None = None

    def step_sizes(self) -> list[int]:
        return self.steps or [len(self.ids)]

    def first(self, n: int) -> LeafSample:
        """The sample of this leaf's first ``n`` documents (a step's)."""
        return LeafSample(self.population, self.ids[:n], self.base[:n], self.base_total)


@dataclass(frozen=True)
class TaskSample:
    """A study task's sample, by leaf (one leaf for a plain task)."""

    leaves: dict[str, LeafSample]

    @property
    def population(self) -> int:
        return sum(leaf.population for leaf in self.leaves.values())

    @property
    def size(self) -> int:
        return sum(len(leaf.ids) for leaf in self.leaves.values())

    def indices(self) -> dict[str, list[int]]:
        return {name: leaf.ids for name, leaf in self.leaves.items()}

    @property
    def steps(self) -> int:
        return max(len(leaf.step_sizes()) for leaf in self.leaves.values())

    def step_sizes(self) -> list[int]:
        """The documents the sample holds after each of its steps."""
        return [self.step(k).size for k in range(self.steps)]

    def step(self, k: int) -> TaskSample:
        """The sample as it stands after step ``k`` (0-based): every leaf's documents so far."""
        return TaskSample(
            {
                name: leaf.first(leaf.step_sizes()[min(k, len(leaf.step_sizes()) - 1)])
                for name, leaf in self.leaves.items()
            }
        )

    def new_in_step(self, k: int) -> dict[str, list[int]]:
        """Per leaf, the documents step ``k`` adds to the steps before it (none for a leaf
        whose steps ended earlier)."""
        out = {}
        for name, leaf in self.leaves.items():
            sizes = [0, *leaf.step_sizes()]
            if k + 1 < len(sizes):
                out[name] = leaf.ids[sizes[k] : sizes[k + 1]]
        return {name: ids for name, ids in out.items() if ids}

    def complement(self) -> dict[str, list[int]]:
        """Per leaf, the documents not in the sample (for the rest of a full evaluation)."""
        out = {}
        for name, leaf in self.leaves.items():
            taken = set(leaf.ids)
            out[name] = [i for i in range(leaf.population) if i not in taken]
        return out

    def to_dict(self) -> dict:
        return {name: asdict(leaf) for name, leaf in self.leaves.items()}

    @classmethod
    def from_dict(cls, data: Mapping) -> TaskSample:
        return cls({name: LeafSample(**leaf) for name, leaf in data.items()})


SampleSize = int | float  # a number of documents, or a fraction of them


def sample_size(population: int, sample: SampleSize, min_docs: int) -> int:
    """Documents to sample from ``population``: a ``sample`` of them (a fraction, or a number
    of documents when it is an int), at least ``min_docs``, at most all."""
    wanted = sample if isinstance(sample, int) else math.ceil(sample * population)
    return min(population, max(min_docs, wanted))


def draw_ids(population: int, n: int, seed: int, name: str, steps: Sequence[int] = ()) -> list[int]:
    """``n`` distinct document indices of ``range(population)``, the same for the same seed
    and leaf name on any machine (a string seed is hashed with SHA-512 by ``random``): in the
    order drawn, so that the first ``k`` are a random sample too, and sorted within each of
    ``steps`` (cumulative sizes; sorted whole without them)."""
    drawn = random.Random(f"{seed}:{name}").sample(range(population), n)
    bounds = [0, *(k for k in steps if k < n), n]
    return [i for a, b in itertools.pairwise(bounds) for i in sorted(drawn[a:b])]


def draw_sample(
    per_doc_base: Mapping[str, Mapping[int, float]],
    sample: SampleSize | Sequence[SampleSize],
    min_docs: int,
    seed: int,
) -> TaskSample:
    """A task's sample from the base model's score on every document of each leaf: ``sample``
    a fraction of its documents, or (an int) a number of them, at least ``min_docs``; a list of
    sizes draws a sample that grows in those steps (racing)."""
    sizes = list(sample) if isinstance(sample, Sequence) else [sample]
    leaves = {}
    population = sum(len(docs) for docs in per_doc_base.values())
    for name, docs in sorted(per_doc_base.items()):
        # each leaf at the same fraction; a group's count and min_docs are shared by its leaves'
        # sizes (a count in whole numbers: 100 / 176 * 176 is 100.00000000000001 in floats)
        share = len(docs) / population if population else 0.0
        floor = math.ceil(min_docs * share)
        steps: list[int] = []
        for size in sizes:
            part = -(-size * len(docs) // population) if isinstance(size, int) else size
            n = sample_size(len(docs), part, floor)
            if not steps or n > steps[-1]:
                steps.append(n)  # a step at or past the whole leaf ends its steps
        if len(steps) > 1 and steps[-1] == len(docs):
            steps.pop()  # the whole leaf is the rest of the evaluation, not a step of the sample
        ids = draw_ids(len(docs), steps[-1], seed, name, steps)
        leaves[name] = LeafSample(
            population=len(docs),
            ids=ids,
            base=[float(docs[i]) for i in ids],
            base_total=float(sum(docs.values())),
            steps=steps if len(steps) > 1 else None,
        )
    return TaskSample(leaves)


def draw_samples(
    per_task: Mapping[str, Mapping[str, Mapping[int, float]]], stages: StagesSpec
) -> dict[str, TaskSample]:
    """Every task's sample as a study with ``stages`` draws it, once, from the base model's
    score on every document of each task's leaves."""
    return {
        task: draw_sample(docs, stages.sample, stages.min_docs, stages.seed)
        for task, docs in per_task.items()
    }


def change_variance(diffs: Sequence[float]) -> float:
    """The sample variance of per-document changes from the base model, floored at ``1/n`` (as
    if one more document had changed by a whole point), so that a sample in which every
    document changed the same way does not claim certainty; 1 for a single document."""
    n = len(diffs)
    if n < 2:
        return 1.0
    mean = sum(diffs) / n
    return max(sum((d - mean) ** 2 for d in diffs) / (n - 1), 1.0 / n)


@dataclass(frozen=True)
class Estimate:
    """A full-set score estimated from a sample: the point and its standard error."""

    mean: float
    stderr: float

    def upper(self, z: float) -> float:
        return self.mean + z * self.stderr

    def lower(self, z: float) -> float:
        return self.mean - z * self.stderr


def estimate(sample: TaskSample, compressed: Mapping[str, Mapping[int, float]]) -> Estimate:
    """The compressed model's pooled score over all of the task's documents, from its scores
    on the sampled ones (``compressed[leaf][doc index]``).

    The variance of the per-document change is ``change_variance``'s, floored.
    """
    total_n = sample.population
    mean = var = 0.0
    for name, leaf in sample.leaves.items():
        got = compressed[name]
        diffs = [got[i] - b for i, b in zip(leaf.ids, leaf.base, strict=True)]
        n, weight = len(diffs), leaf.population / total_n
        d_mean = sum(diffs) / n
        mean += weight * (leaf.base_total / leaf.population + d_mean)
        if n < leaf.population:
            var += weight**2 * change_variance(diffs) / n * (1 - n / leaf.population)
    return Estimate(mean, math.sqrt(var))


def pooled_score(
    sample: TaskSample,
    in_sample: Mapping[str, Mapping[int, float]],
    rest: Mapping[str, Mapping[int, float]],
) -> float:
    """The exact pooled score over every document, from the sampled and the other documents."""
    total = sum(sum(docs.values()) for docs in in_sample.values())
    total += sum(sum(docs.values()) for docs in rest.values())
    return total / sample.population
