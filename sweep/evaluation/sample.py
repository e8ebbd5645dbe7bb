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
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class LeafSample:
    """One lm-eval task (a leaf) of a study's task: how many documents it has, the sorted
    indices of those sampled, the base model's per-document score on them, and its total over
    all documents."""

    population: int
    ids: list[int]
    base: list[float]
    base_total: float


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


def sample_size(population: int, sample: int | float, min_docs: int) -> int:
    """Documents to sample from ``population``: a ``sample`` of them (a fraction, or a number
    of documents when it is an int), at least ``min_docs``, at most all."""
    wanted = sample if isinstance(sample, int) else math.ceil(sample * population)
    return min(population, max(min_docs, wanted))


def draw_ids(population: int, n: int, seed: int, name: str) -> list[int]:
    """``n`` distinct document indices of ``range(population)``, sorted; the same for the same
    seed and leaf name on any machine (a string seed is hashed with SHA-512 by ``random``)."""
    return sorted(random.Random(f"{seed}:{name}").sample(range(population), n))


def draw_sample(
    per_doc_base: Mapping[str, Mapping[int, float]], sample: int | float, min_docs: int, seed: int
) -> TaskSample:
    """A task's sample from the base model's score on every document of each leaf: ``sample``
    a fraction of its documents, or (an int) a number of them, at least ``min_docs``."""
    leaves = {}
    population = sum(len(docs) for docs in per_doc_base.values())
    for name, docs in sorted(per_doc_base.items()):
        # each leaf at the same fraction; a group's count and min_docs are shared by its leaves'
        # sizes (a count in whole numbers: 100 / 176 * 176 is 100.00000000000001 in floats)
        share = len(docs) / population if population else 0.0
        part = -(-sample * len(docs) // population) if isinstance(sample, int) else sample
        n = sample_size(len(docs), part, math.ceil(min_docs * share))
        ids = draw_ids(len(docs), n, seed, name)
        leaves[name] = LeafSample(
            population=len(docs),
            ids=ids,
            base=[float(docs[i]) for i in ids],
            base_total=float(sum(docs.values())),
        )
    return TaskSample(leaves)


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

    The variance of the per-document change is floored at ``1/n`` (as if one more sampled
    document had changed by a whole point), so that a sample in which every document changed
    the same way does not claim certainty.
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
            s2 = sum((d - d_mean) ** 2 for d in diffs) / (n - 1) if n > 1 else 1.0
            s2 = max(s2, 1.0 / n)
            var += weight**2 * s2 / n * (1 - n / leaf.population)
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
