"""The search variables, in one table: each one's choices in the spec, when a configuration asks
it, its value where it does not apply, and which values are refused.

Everything that handles variables reads this table: the spec's ``search`` lists and their checks
(``sweep.spec.SearchSpace``), the configuration's own checks (``CompressionConfig``), the
sampler's questions and the listing of the space (``sweep.space``), and the one-configuration
space an export writes (``sweep.export.fragment``). Adding a variable is one entry here, a field
of ``CompressionConfig`` and a list of ``SearchSpace``, and its tests (tests/compress/
test_variables.py checks that the three agree).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sweep.compress.activations import ACTIVATIONS, FORMATS_WITH_ACTIVATIONS, activations_of
from sweep.compress.formats import FORMATS
from sweep.compress.registry import JOINT_PRUNERS, PRUNERS, QUANTIZERS, unknown_name_message

UNSTRUCTURED = "unstructured"
ORDERS = ("prune_first", "quant_first", "joint")
CASES = ("A", "B")
SUPPORTED_BITS = (2, 3, 4, 8, 16)
INT = "int"  # integer weights of ``bits`` on a grid of ``group_size`` and ``symmetric``
WEIGHT_FORMATS = (INT, *FORMATS)  # a float format fixes its bits, groups and symmetry
PROFILES = ("uniform", "owl")  # how sparsity spreads over the layers
ALLOCATIONS = ("uniform", "mixed")  # how bit-widths spread over the layers
MIXED_BITS = (2, 3, 4, 8)  # the widths a mixed allocation gives layers, ``bits`` their average
OWL_M = 5.0  # OWL's defaults (Yin et al. 2024)
OWL_LAMBDA = 0.08
_NM = re.compile(r"^(\d+):(\d+)$")


def parse_pattern(pattern: str) -> tuple[int, int] | None:
    """``"unstructured"`` -> None; ``"N:M"`` -> (N, M): at most N of every M weights kept."""
    if pattern == UNSTRUCTURED:
        return None
    match = _NM.match(pattern)
    if not match:
        raise ValueError(f"pattern must be 'unstructured' or 'N:M' (e.g. '2:4'), got {pattern!r}")
    n, m = int(match[1]), int(match[2])
    if not 0 < n < m:
        raise ValueError(f"an N:M pattern needs 0 < N < M, got {pattern!r}")
    return n, m


def allocation_acts(bits: int) -> bool:
    """Whether a mixed allocation with an average of ``bits`` can differ from a uniform one: not
    at either end of MIXED_BITS (nor outside it), where every layer gets ``bits``."""
    return min(MIXED_BITS) < bits < max(MIXED_BITS)


# --- when a configuration asks a variable, from the fields chosen before it -----------------


def prunes(fields: dict[str, Any]) -> bool:
    return fields["pattern"] != UNSTRUCTURED or fields.get("sparsity", 0.0) > 0.0


def quantizes(fields: dict[str, Any]) -> bool:
    return fields.get("format", INT) != INT or fields["bits"] < 16


def _integer(fields: dict[str, Any]) -> bool:
    return fields.get("format", INT) == INT


def _integer_grid(fields: dict[str, Any]) -> bool:
    return _integer(fields) and quantizes(fields)


def _always(fields: dict[str, Any]) -> bool:
    return True


def _unstructured(fields: dict[str, Any]) -> bool:
    return fields["pattern"] == UNSTRUCTURED


def _spreads_sparsity(fields: dict[str, Any]) -> bool:
    return prunes(fields) and fields["pattern"] == UNSTRUCTURED


def _owl(fields: dict[str, Any]) -> bool:
    return fields.get("profile") == "owl"


def _quantizes_activations(fields: dict[str, Any]) -> bool:
    return fields.get("format", INT) in FORMATS_WITH_ACTIVATIONS


def _spreads_bits(fields: dict[str, Any]) -> bool:
    return _integer_grid(fields) and allocation_acts(fields["bits"])


def _both(fields: dict[str, Any]) -> bool:
    return prunes(fields) and quantizes(fields)


def _sequential(fields: dict[str, Any]) -> bool:
    return _both(fields) and fields["order"] == "prune_first"


def _one_pass(fields: dict[str, Any]) -> bool:
    """A joint pass of a pruner that has one: it quantizes GPTQ-style, in its own column order."""
    return _both(fields) and fields["order"] == "joint" and fields["prune_method"] in JOINT_PRUNERS


def _gptq_order(fields: dict[str, Any]) -> bool:
    return quantizes(fields) and fields["quant_method"] == "gptq" and not _one_pass(fields)


# --- which values are refused: None, or why ---------------------------------------------------


def _pattern(value: str) -> str | None:
    try:
        parse_pattern(value)
    except ValueError as err:
        return str(err)
    return None


def _one_of(kind: str, allowed: Sequence[Any]) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value in allowed:
            return None
        return unknown_name_message(kind, str(value), [str(a) for a in allowed])

    return check


def _registered(kind: str, names: Callable[[], list[str]]) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        allowed = names()
        return None if value in allowed else unknown_name_message(kind, value, allowed)

    return check


def _bits(value: int) -> str | None:
    if value in SUPPORTED_BITS:
        return None
    return f"unsupported bit-width {value}; allowed: {list(SUPPORTED_BITS)}"


def _group_size(value: int | None) -> str | None:
    if value is None or value > 0:
        return None
    return f"group size {value} must be positive, or null for per-channel"


def _owl_lambda(value: float) -> str | None:
    return None if 0.0 < value < 0.5 else f"OWL's lambda {value} must be in (0, 0.5)"


def _owl_m(value: float) -> str | None:
    return None if value > 0 else f"OWL's M {value} must be positive"


def _sparsity(value: float) -> str | None:
    return None if 0.0 <= value < 1.0 else f"sparsity must be in [0, 1), got {value}"


def _any(value: Any) -> str | None:
    return None


@dataclass(frozen=True)
class Variable:
    """One search variable. ``name`` is the ``CompressionConfig`` field and the trial parameter;
    ``spec_list`` the ``SearchSpace`` field that offers its choices. A configuration asks it
    where ``applies`` holds for the fields chosen before it (the table's order); elsewhere it
    keeps ``default``. ``skipped`` is the value meaning "this step does not happen", which
    ``search.first`` may leave out."""

    name: str
    spec_list: str
    applies: Callable[[dict[str, Any]], bool]
    default: Any
    check: Callable[[Any], str | None] = _any
    skipped: Any = None
    # its choices depend on the weight format (each format has its own): they are narrowed to
    # the format's, and asked as a parameter of its own per format, since Optuna keeps one set of
    # choices per parameter
    per_format: Callable[[str], Sequence[Any]] | None = None

    def choices(self, space: Any, fields: dict[str, Any] | None = None) -> list[Any]:
        """The choices ``space`` (a ``SearchSpace``) offers, for a configuration whose fields so
        far are ``fields``."""
        offered = getattr(space, self.spec_list)
        offered = offered.grid() if hasattr(offered, "grid") else list(offered)
        if self.per_format is None or fields is None:
            return offered
        allowed = self.per_format(fields.get("format", INT))
        return [value for value in offered if value in allowed]

    def param(self, fields: dict[str, Any]) -> str:
        """The trial parameter that asks it, for a configuration whose fields so far are
        ``fields``: its name, or ``name:format`` for a variable asked per format."""
        if self.per_format is None:
            return self.name
        return f"{self.name}:{fields.get('format', INT)}"


def field_of(param: str) -> str:
    """The ``CompressionConfig`` field a trial parameter sets."""
    return param.split(":", 1)[0]


# The order is the order of the sampler's questions (it decides which apply): do not reorder.
VARIABLES: tuple[Variable, ...] = (
    Variable("pattern", "patterns", _always, UNSTRUCTURED, _pattern, skipped=UNSTRUCTURED),
    Variable("sparsity", "sparsity", _unstructured, 0.0, _sparsity, skipped=0.0),
    Variable("format", "formats", _always, INT, _one_of("weight format", WEIGHT_FORMATS),
             skipped=INT),
    Variable("bits", "bits", _integer, 16, _bits, skipped=16),
    # activations quantized at run time, where the format has them: none (weights alone)
    Variable("activations", "activations", _quantizes_activations, "none",
             _one_of("activation quantization", ACTIVATIONS), skipped="none",
             per_format=activations_of),
    Variable("prune_method", "prune_methods", prunes, "magnitude",
             _registered("pruning method", PRUNERS.names)),
    Variable("profile", "profiles", _spreads_sparsity, "uniform",
             _one_of("sparsity profile", PROFILES), skipped="uniform"),
    Variable("owl_lambda", "owl_lambdas", _owl, OWL_LAMBDA, _owl_lambda),
    Variable("owl_m", "owl_ms", _owl, OWL_M, _owl_m),
    Variable("quant_method", "quant_methods", quantizes, "rtn",
             _registered("quantization method", QUANTIZERS.names)),
    Variable("group_size", "group_sizes", _integer_grid, 128, _group_size),
    Variable("symmetric", "symmetric", _integer_grid, False),
    Variable("allocation", "allocations", _spreads_bits, "uniform",
             _one_of("bit allocation", ALLOCATIONS), skipped="uniform"),
    Variable("order", "orders", _both, "prune_first", _one_of("order", ORDERS)),
    Variable("case", "cases", _sequential, "B", _one_of("case", CASES)),
    # GPTQ's activation order: columns visited by decreasing Hessian diagonal
    Variable("act_order", "act_orders", _gptq_order, False),
)  # fmt: skip
BY_NAME = {v.name: v for v in VARIABLES}
DEFAULTS = {v.name: v.default for v in VARIABLES}


def choose(ask: Callable[[Variable, list[Any], str], Any], space: Any) -> dict[str, Any]:
    """The fields of one configuration: each variable that applies, in the table's order, gets
    ``ask(variable, its choices in space, its trial parameter)``; the others keep their
    default."""
    fields: dict[str, Any] = {}
    for variable in VARIABLES:
        known = DEFAULTS | fields
        if variable.applies(known):
            fields[variable.name] = ask(
                variable, variable.choices(space, known), variable.param(known)
            )
    return fields
