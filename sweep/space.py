"""The study spec's search space as Optuna suggestions, giving one CompressionConfig a trial."""

from __future__ import annotations

import math
from typing import Any

import optuna

from sweep.compress.config import INT, CompressionConfig
from sweep.compress.formats import FORMATS
from sweep.compress.variables import BY_NAME, DEFAULTS, VARIABLES, Variable, choose, field_of
from sweep.spec import SearchSpace, SpecError


def suggest_config(trial: optuna.Trial, space: SearchSpace) -> CompressionConfig:
    """Ask the trial for one configuration: each variable of the table that applies, in its
    order (``sweep.compress.variables``); a variable with one choice is fixed without a trial
    parameter, and one without effect is not asked."""

    def ask(variable: Variable, choices: list[Any], param: str) -> Any:
        if len(choices) == 1:
            return choices[0]
        return trial.suggest_categorical(param, choices)

    return CompressionConfig(**choose(ask, space))


class _Answers:
    """Stands in for a trial: answers each question from a configuration, noting what is asked."""

    def __init__(self, config: CompressionConfig) -> None:
        self._values = config.to_dict()
        self.params: dict = {}

    def suggest_categorical(self, name: str, choices: list):
        self.params[name] = self._values[field_of(name)]
        return self.params[name]


class _Given:
    """Stands in for a trial: answers from the parameters a spec gives (no sparsity: not
    pruned; no bits: not quantized), refusing a question it has no answer for and an answer the
    space does not offer."""

    def __init__(self, params: dict, where: str) -> None:
        self.params = dict(params)
        self.asked: set[str] = set()
        self.where = where

    def suggest_categorical(self, param: str, choices: list):
        name = field_of(param)
        self.asked.add(name)
        skipped = BY_NAME[name].skipped
        if name not in self.params and skipped is not None and skipped in choices:
            return skipped  # left out: that step does not happen
        if name not in self.params:
            raise SpecError(f"{self.where}: give {name} (one of {choices})")
        value = self.params[name]
        if name == "sparsity" and isinstance(value, (int, float)):
            value = round(float(value), 6)
        if value not in choices:
            raise SpecError(f"{self.where}: {name} {value!r} is not in the space: {choices}")
        return value


def _single_choices(space: SearchSpace) -> dict[str, object]:
    """The parameters the space fixes (one choice, so never asked), and their value."""
    offered = {v.name: v.choices(space) for v in VARIABLES}
    return {name: choices[0] for name, choices in offered.items() if len(choices) == 1}


def first_configs(space: SearchSpace) -> list[CompressionConfig]:
    """The configurations ``space.first`` names, in order; a clear error for one the space does
    not hold, one that leaves a choice open, or a parameter it has no use for."""
    configs = []
    single = _single_choices(space)
    for i, params in enumerate(space.first):
        given = _Given(params, f"search.first[{i}]")
        config = suggest_config(given, space)  # type: ignore[arg-type]
        unused = sorted(
            k for k in set(params) - given.asked if k not in single or single[k] != params[k]
        )
        if unused:
            raise SpecError(f"search.first[{i}]: {', '.join(unused)} has no effect here")
        configs.append(config)
    return configs


def config_params(config: CompressionConfig, space: SearchSpace) -> dict:
    """The trial parameters for which ``suggest_config`` gives ``config`` (as canonical)."""
    answers = _Answers(config.canonical())
    suggest_config(answers, space)  # type: ignore[arg-type]
    return answers.params


def all_configs(space: SearchSpace) -> set[CompressionConfig]:
    """Every distinct (canonical) configuration ``suggest_config`` can return: ``space.size()``
    of them. The same walk through the table of variables, taking every choice of each variable
    that applies instead of one, so the work grows with the configurations, not with the
    product of every list."""
    configs: set[CompressionConfig] = set()

    def walk(fields: dict[str, Any], index: int) -> None:
        for i in range(index, len(VARIABLES)):
            variable = VARIABLES[i]
            if variable.applies(DEFAULTS | fields):
                for value in dict.fromkeys(variable.choices(space, DEFAULTS | fields)):
                    walk({**fields, variable.name: value}, i + 1)
                return
        configs.add(CompressionConfig(**fields).canonical())

    walk({}, 0)
    return configs


def unfit_layers(group_size: int | None, widths: dict[str, int]) -> dict[str, int]:
    """The layers (name -> input width) whose rows ``group_size`` does not tile."""
    if group_size is None:
        return {}
    return {name: width for name, width in widths.items() if width % group_size}


def fitting_group_sizes(widths: dict[str, int]) -> list[int]:
    """Group sizes (powers of two from 8, and the widths' greatest common divisor) that tile
    the rows of every layer."""
    common = math.gcd(*widths.values())
    sizes = {g for g in (2**k for k in range(3, 11)) if common % g == 0}
    return sorted(sizes | ({common} if common >= 8 else set()))


def check_group_sizes(space: SearchSpace, widths: dict[str, int]) -> None:
    """Refuse, before any trial, group sizes that do not tile the input rows of every
    compressible layer (name -> input width): the export format (compressed-tensors) stores a
    grouped layer only when its groups tile the row, so every such trial would be unexportable."""
    floats = [FORMATS[f] for f in space.formats if f != INT]
    for fmt in floats:
        unfit = unfit_layers(fmt.group_size, widths)
        if unfit:
            name, width = next(iter(unfit.items()))
            raise SpecError(
                f"search.formats: {fmt.name} quantizes in groups of {fmt.group_size}, which do "
                f"not divide the input width of {len(unfit)} layers "
                f"({name.removesuffix('.weight')}: {width}); drop {fmt.name} for this model"
            )
    if INT not in space.formats or all(bits >= 16 for bits in space.bits):
        return
    for group in space.group_sizes:
        unfit = unfit_layers(group, widths)
        if unfit:
            shown = ", ".join(
                f"{n.removesuffix('.weight')} ({w})" for n, w in list(unfit.items())[:3]
            )
            more = f" and {len(unfit) - 3} more" if len(unfit) > 3 else ""
            raise SpecError(
                f"search.group_sizes: {group} does not divide the input width of {len(unfit)} "
                f"layers: {shown}{more}. Group sizes that fit every layer: "
                f"{fitting_group_sizes(widths) or 'none'}, or null (one scale per output channel)"
            )
