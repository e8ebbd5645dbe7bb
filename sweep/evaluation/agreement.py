"""How a compressed model's answers compare with its base model's, document by document, on
one task: flips, recovery, and retention with an error bar.

- **Flips**: documents whose score changed against the base model's (a right answer turned
  wrong, or a wrong one right). Two models can have the same accuracy while a tenth of their
  answers trade places; flips show that damage where the accuracy hides it.
- **Recovery**: the task score over the base model's, the figure model cards publish.
- **Retention** is the task's term of Sr (``sweep.metrics.task_retention``); its **interval** is
  paired: what is uncertain is the mean change from the base model over documents, whose
  variance is small when the two models agree on most of them. The standard error has no finite
  population correction: it counts the task's documents as a sample of the questions the task
  stands for, so a full evaluation has an error bar too, and one of ``n`` sampled documents
  has the error bar of ``n`` documents (its own sampling error and the task's together).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from sweep.evaluation.sample import change_variance
from sweep.metrics import task_retention

Z_95 = 1.959964  # a two-sided 95% interval, in standard errors


@dataclass(frozen=True)
class TaskAgreement:
    """One task of one trial against the base model, over the documents it scored."""

    documents: int  # documents scored (all of the task's, unless it stopped after a sample)
    population: int  # documents the task has
    flips: int  # of ``documents``, those whose score changed against the base model's
    recovery: float  # task score / base score
    retention: float  # the task's term of Sr
    retention_low: float  # the 95% interval of ``retention``
    retention_high: float

    @property
    def flip_rate(self) -> float:
        return self.flips / self.documents if self.documents else 0.0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, float]) -> TaskAgreement:
        return cls(**data)  # type: ignore[arg-type]


def paired_stderr(
    scored: Mapping[str, Mapping[int, float]], base: Mapping[str, Sequence[float]]
) -> float:
    """Standard error of the pooled mean change from the base model, leaves as strata weighted
    by their documents, without finite population correction (see the module's notes); each
    leaf's variance is ``change_variance``'s, floored."""
    population = sum(len(base[leaf]) for leaf in scored)
    var = 0.0
    for leaf, docs in scored.items():
        n = len(docs)
        if not n:
            continue
        diffs = [score - base[leaf][i] for i, score in docs.items()]
        var += (len(base[leaf]) / population) ** 2 * change_variance(diffs) / n
    return math.sqrt(var)


def task_agreement(
    scored: Mapping[str, Mapping[int, float]],
    base: Mapping[str, Sequence[float]],
    score: float,
    base_score: float,
    random_score: float,
    z: float = Z_95,
) -> TaskAgreement:
    """The agreement of a task's ``scored`` documents (per leaf, per document index) with the
    base model's scores on every document of each leaf (``base``); ``score`` is the task's
    score (exact, or estimated from a sample), ``base_score`` and ``random_score`` Sr's."""
    flips = sum(1 for leaf, docs in scored.items() for i, s in docs.items() if s != base[leaf][i])
    margin = z * paired_stderr(scored, base)

    def retention(at: float) -> float:
        return task_retention(min(1.0, max(0.0, at)), base_score, random_score)

    return TaskAgreement(
        documents=sum(len(docs) for docs in scored.values()),
        population=sum(len(base[leaf]) for leaf in base),
        flips=flips,
        recovery=score / base_score,
        retention=retention(score),
        retention_low=retention(score - margin),
        retention_high=retention(score + margin),
    )


def sr_interval(agreements: Mapping[str, TaskAgreement]) -> tuple[float, float]:
    """Sr's 95% interval from its tasks', each task at its bound (conservative for the mean)."""
    values = list(agreements.values())
    return (
        sum(a.retention_low for a in values) / len(values),
        sum(a.retention_high for a in values) / len(values),
    )
