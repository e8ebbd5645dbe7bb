"""The study spec's search space as Optuna suggestions, giving one CompressionConfig a trial."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import optuna

from sweep.compress.config import CompressionConfig, allocation_acts
from sweep.spec import SearchSpace, SpecError


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
        if pattern == "unstructured":
            fields["profile"] = _pick(trial, "profile", space.profiles)
            if fields["profile"] == "owl":
                fields["owl_lambda"] = _pick(trial, "owl_lambda", space.owl_lambdas)
                fields["owl_m"] = _pick(trial, "owl_m", space.owl_ms)
    if quantizes:
        fields["quant_method"] = _pick(trial, "quant_method", space.quant_methods)
        fields["group_size"] = _pick(trial, "group_size", space.group_sizes)
        fields["symmetric"] = _pick(trial, "symmetric", space.symmetric)
        if allocation_acts(bits):
            fields["allocation"] = _pick(trial, "allocation", space.allocations)
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


class _Given:
    """Stands in for a trial: answers from the parameters a spec gives (no sparsity: not
    pruned; no bits: not quantized), refusing a question it has no answer for and an answer the
    space does not offer."""

    def __init__(self, params: dict, where: str) -> None:
        self.params = dict(params)
        self.asked: set[str] = set()
        self.where = where

    def suggest_categorical(self, name: str, choices: list):
        self.asked.add(name)
        if name not in self.params and _UNCOMPRESSED.get(name, _NONE) in choices:
            return _UNCOMPRESSED[name]  # left out: that step does not happen
        if name not in self.params:
            raise SpecError(f"{self.where}: give {name} (one of {choices})")
        value = self.params[name]
        if name == "sparsity" and isinstance(value, (int, float)):
            value = round(float(value), 6)
        if value not in choices:
            raise SpecError(f"{self.where}: {name} {value!r} is not in the space: {choices}")
        return value


_NONE = object()
_UNCOMPRESSED = {"pattern": "unstructured", "sparsity": 0.0, "bits": 16, "profile": "uniform",
                 "allocation": "uniform"}  # fmt: skip


def _single_choices(space: SearchSpace) -> dict[str, object]:
    """The parameters the space fixes (one choice, so never asked), and their value."""
    lists = {"pattern": space.patterns, "sparsity": space.sparsity.grid(), "bits": space.bits,
             "prune_method": space.prune_methods, "quant_method": space.quant_methods,
             "group_size": space.group_sizes, "symmetric": space.symmetric,
             "order": space.orders, "case": space.cases, "profile": space.profiles,
             "owl_lambda": space.owl_lambdas, "owl_m": space.owl_ms,
             "allocation": space.allocations}  # fmt: skip
    return {name: choices[0] for name, choices in lists.items() if len(choices) == 1}


def first_configs(space: SearchSpace) -> list[CompressionConfig]:
    """The configurations ``space.first`` names, in order; a clear error for one the space does
    not hold, one that leaves a choice open, or a parameter it has no use for."""
    configs = []
    for i, params in enumerate(space.first):
        given = _Given(params, f"search.first[{i}]")
        config = suggest_config(given, space)  # type: ignore[arg-type]
        single = _single_choices(space)
        unused = sorted(k for k in set(params) - given.asked if single.get(k, _NONE) != params[k])
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
    """Every distinct (canonical) configuration the space holds: ``space.size()`` of them.

    Built from the choices a configuration depends on (as ``suggest_config`` asks them), so
    the work grows with the configurations, not with the product of every list."""
    configs = set()
    for pruning in _pruning_choices(space):
        for quantization in _quantization_choices(space):
            for order in _order_choices(space) if pruning and quantization else [{}]:
                configs.add(CompressionConfig(**pruning, **quantization, **order).canonical())
    return configs


def _pruning_choices(space: SearchSpace) -> Iterator[dict]:
    """The pruning fields of each configuration: ``{}`` for none."""
    for pattern in dict.fromkeys(space.patterns):
        if pattern != "unstructured":
            yield from ({"pattern": pattern, "prune_method": m} for m in space.prune_methods)
            continue
        for sparsity in space.sparsity.grid():
            if sparsity == 0.0:
                yield {}
                continue
            for method, profile in itertools.product(space.prune_methods, space.profiles):
                fields = {"sparsity": sparsity, "prune_method": method, "profile": profile}
                if profile == "uniform":
                    yield fields
                    continue
                for lam, m in itertools.product(space.owl_lambdas, space.owl_ms):
                    yield {**fields, "owl_lambda": lam, "owl_m": m}


def _quantization_choices(space: SearchSpace) -> Iterator[dict]:
    """The quantization fields of each configuration: ``{}`` for none (16 bits); a mixed
    allocation only where it acts."""
    for bits in dict.fromkeys(space.bits):
        allocations = [a for a in space.allocations if a == "uniform" or allocation_acts(bits)]
        if bits == 16:
            if allocations:  # uniform: a configuration that does not quantize has no other
                yield {}
            continue
        for group, sym, method, allocation in itertools.product(
            space.group_sizes, space.symmetric, space.quant_methods, allocations
        ):
            yield {"bits": bits, "group_size": group, "symmetric": sym, "quant_method": method,
                   "allocation": allocation}  # fmt: skip


def _order_choices(space: SearchSpace) -> Iterator[dict]:
    """The order (and case) of a configuration that both prunes and quantizes."""
    for order in space.orders:
        cases = space.cases if order == "prune_first" else ["B"]
        yield from ({"order": order, "case": case} for case in cases)


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
    if all(bits >= 16 for bits in space.bits):
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
