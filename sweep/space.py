"""The study spec's search space as Optuna suggestions, giving one CompressionConfig a trial."""

from __future__ import annotations

import itertools

import optuna

from sweep.compress.config import CompressionConfig
from sweep.spec import SearchSpace


def _pick(trial: optuna.Trial, name: str, choices: list):
    """Suggest from ``choices``; a single choice is fixed without a trial parameter."""
    if len(choices) == 1:
        return choices[0]
    return trial.suggest_categorical(name, choices)


def suggest_config(trial: optuna.Trial, space: SearchSpace) -> CompressionConfig:
    """Ask the trial for one configuration; parameters that would have no effect are not asked."""
    pattern = _pick(trial, "pattern", space.patterns)
    sparsity = 0.0
    if pattern == "unstructured":
        sparsity = _pick(trial, "sparsity", space.sparsity.grid())
    bits = _pick(trial, "bits", space.bits)
    prunes = pattern != "unstructured" or sparsity > 0
    quantizes = bits < 16

    fields: dict = {"sparsity": sparsity, "pattern": pattern, "bits": bits}
    if prunes:
        fields["prune_method"] = _pick(trial, "prune_method", space.prune_methods)
    if quantizes:
        fields["quant_method"] = _pick(trial, "quant_method", space.quant_methods)
        fields["group_size"] = _pick(trial, "group_size", space.group_sizes)
        fields["symmetric"] = _pick(trial, "symmetric", space.symmetric)
    if prunes and quantizes:
        fields["order"] = _pick(trial, "order", space.orders)
        if fields["order"] == "prune_first":
            fields["case"] = _pick(trial, "case", space.cases)
    return CompressionConfig(**fields)


class _Answers:
    """Stands in for a trial: answers each question from a configuration, noting what is asked."""

    def __init__(self, config: CompressionConfig) -> None:
        self._values = config.to_dict()
        self.params: dict = {}

    def suggest_categorical(self, name: str, choices: list):
        self.params[name] = self._values[name]
        return self._values[name]


def config_params(config: CompressionConfig, space: SearchSpace) -> dict:
    """The trial parameters for which ``suggest_config`` gives ``config`` (as canonical)."""
    answers = _Answers(config.canonical())
    suggest_config(answers, space)  # type: ignore[arg-type]
    return answers.params


def all_configs(space: SearchSpace) -> set[CompressionConfig]:
    """Every distinct (canonical) configuration the space holds."""
    configs = set()
    for pattern in space.patterns:
        sparsities = space.sparsity.grid() if pattern == "unstructured" else [0.0]
        for s, bits, pm, qm, g, sym, order, case in itertools.product(
            sparsities,
            space.bits,
            space.prune_methods,
            space.quant_methods,
            space.group_sizes,
            space.symmetric,
            space.orders,
            space.cases,
        ):
            cfg = CompressionConfig(
                sparsity=s,
                pattern=pattern,
                bits=bits,
                prune_method=pm,
                quant_method=qm,
                group_size=g,
                symmetric=sym,
                order=order,
                case=case,
            )
            configs.add(cfg.canonical())
    return configs
