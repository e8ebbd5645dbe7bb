"""What one trial asks of the compression engine."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from sweep.compress.activations import FORMATS_WITH_ACTIVATIONS
from sweep.compress.formats import FORMATS
from sweep.compress.registry import JOINT_PRUNERS
from sweep.compress.variables import (
    ALLOCATIONS,
    CASES,
    INT,
    MIXED_BITS,
    ORDERS,
    OWL_LAMBDA,
    OWL_M,
    PROFILES,
    SUPPORTED_BITS,
    UNSTRUCTURED,
    VARIABLES,
    allocation_acts,
    parse_pattern,
)

__all__ = [
    "ALLOCATIONS", "CASES", "INT", "MIXED_BITS", "ORDERS", "OWL_LAMBDA", "OWL_M", "PROFILES",
    "SUPPORTED_BITS", "UNSTRUCTURED", "CompressionConfig", "allocation_acts", "grid_name",
    "number_text", "parse_pattern", "sparsity_text",
]  # fmt: skip


def number_text(x: float) -> str:
    """``x`` in its shortest form (``5``, ``0.08``), with every digit it needs to be told from
    its neighbours (``5.0000001``)."""
    short = f"{x:g}"
    return short if float(short) == x else repr(float(x))


def sparsity_text(sparsity: float) -> str:
    """``50%``, ``99.9999%``: a sparsity as labels show it."""
    return f"{number_text(round(sparsity * 100, 4))}%"


def grid_name(group_size: int | None, symmetric: bool) -> str:
    """``g128-asym``, ``ch-sym``...: a quantization grid's shape, as keys name it."""
    group = "ch" if group_size is None else f"g{group_size}"
    return f"{group}-{'sym' if symmetric else 'asym'}"


@dataclass(frozen=True)
class CompressionConfig:
    """One point of the search space.

    ``sparsity`` is the fraction of compressible weights to prune (ignored by N:M patterns, whose
    sparsity is 1 - N/M). ``format`` is ``int`` (integer weights) or a float format of
    ``sweep.compress.formats``, which sets ``bits`` to its nominal width and ``group_size`` and
    ``symmetric`` to its own. ``bits = 16`` means no quantization; ``group_size = None`` means one
    scale per output channel. ``order`` says whether pruning or quantization comes first, or both
    in one pass; ``case`` applies to prune-then-quantize: A quantizes every weight, B keeps the
    pruning mask so pruned weights stay exactly zero.
    """

    sparsity: float = 0.0
    pattern: str = UNSTRUCTURED
    prune_method: str = "magnitude"
    bits: int = 16
    group_size: int | None = 128
    symmetric: bool = False
    quant_method: str = "rtn"
    act_order: bool = False
    order: str = "prune_first"
    case: str = "B"
    profile: str = "uniform"
    owl_m: float = OWL_M
    owl_lambda: float = OWL_LAMBDA
    allocation: str = "uniform"
    format: str = INT
    activations: str = "none"

    def __post_init__(self) -> None:
        for variable in VARIABLES:  # each value, as the spec's lists are checked
            refusal = variable.check(getattr(self, variable.name))
            if refusal is not None:
                raise ValueError(f"{variable.name}: {refusal}")
        if self.format != INT:
            fmt = FORMATS[self.format]
            object.__setattr__(self, "bits", fmt.nominal_bits)
            object.__setattr__(self, "group_size", fmt.group_size)
            object.__setattr__(self, "symmetric", True)
        if self.profile == "owl" and self.nm is not None:
            raise ValueError(f"the owl profile spreads unstructured sparsity, not {self.pattern}")
        if self.activations != "none" and self.activations not in FORMATS_WITH_ACTIVATIONS.get(
            self.format, ()
        ):
            allowed = {f: list(a) for f, a in FORMATS_WITH_ACTIVATIONS.items()}
            raise ValueError(
                f"activations {self.activations} need a format that has them ({allowed}); "
                f"got format {self.format}"
            )
        if self.allocation == "mixed" and self.format != INT:
            raise ValueError(f"a mixed allocation spreads integer widths, not {self.format}")
        if self.allocation == "mixed" and self.bits not in MIXED_BITS:
            raise ValueError(
                f"a mixed allocation takes bits as its average, one of {MIXED_BITS}; "
                f"got {self.bits}"
            )

    @property
    def nm(self) -> tuple[int, int] | None:
        return parse_pattern(self.pattern)

    @property
    def target_sparsity(self) -> float:
        nm = self.nm
        return self.sparsity if nm is None else 1.0 - nm[0] / nm[1]

    @property
    def prunes(self) -> bool:
        return self.target_sparsity > 0.0

    @property
    def quantizes(self) -> bool:
        return self.bits < 16

    @property
    def non_uniform(self) -> bool:
        """Whether layers get different sparsities or bit-widths (a per-layer plan)."""
        c = self.canonical()
        return c.profile != "uniform" or c.allocation != "uniform"

    def for_layer(self, sparsity: float, bits: int) -> CompressionConfig:
        """This config as one layer of its plan applies it: uniform, at that layer's sparsity
        and bit-width."""
        return replace(
            self, sparsity=sparsity, bits=bits, profile="uniform", allocation="uniform",
            owl_m=OWL_M, owl_lambda=OWL_LAMBDA,
        )  # fmt: skip

    def canonical(self) -> CompressionConfig:
        """The same compression with every field that has no effect set to its default.

        A joint SparseGPT pass quantizes with GPTQ-style error feedback whatever the quantizer's
        name, so its ``quant_method`` becomes "gptq" (and ``act_order`` False); a joint order with
        any other pruner is prune-then-quantize, Case B.

        Two configs with equal ``canonical()`` produce the same model, so a study computes them
        once.
        """
        defaults = CompressionConfig()
        fields = asdict(self)
        if not self.prunes:
            fields.update(sparsity=0.0, pattern=UNSTRUCTURED, prune_method=defaults.prune_method)
        elif self.nm is not None:
            fields.update(sparsity=0.0)
        if not self.quantizes:
            fields.update(
                bits=16,
                group_size=defaults.group_size,
                symmetric=defaults.symmetric,
                quant_method=defaults.quant_method,
                act_order=defaults.act_order,
            )
        if not self.prunes or self.nm is not None or self.profile == "uniform":
            fields.update(profile="uniform", owl_m=OWL_M, owl_lambda=OWL_LAMBDA)
        if not self.quantizes or self.format != INT or not allocation_acts(self.bits):
            fields.update(allocation="uniform")
        if not (self.prunes and self.quantizes):
            fields.update(order=defaults.order, case=defaults.case)
        elif self.order != "prune_first":
            fields.update(case=defaults.case)
        joint = self.prunes and self.quantizes and self.order == "joint"
        if joint and self.prune_method in JOINT_PRUNERS:
            fields.update(quant_method="gptq", act_order=False)
        elif joint:  # a pruner without a one-pass form runs prune-then-quantize, Case B
            fields.update(order="prune_first", case="B")
        if fields["quant_method"] != "gptq":  # only GPTQ visits columns in an order
            fields.update(act_order=False)
        fields["sparsity"] = round(fields["sparsity"], 6)
        return CompressionConfig(**fields)

    def key(self) -> str:
        """A short, stable text naming the canonical config, for logs and deduplication: two
        configs share it only when their canonical forms are equal (``magnitude-50%``,
        ``magnitude-99.9999%``: a sparsity shows the digits it has)."""
        c = self.canonical()
        parts = []
        if c.prunes:
            amount = c.pattern if c.nm else sparsity_text(c.sparsity)
            owl = (
                f"-owl-m{number_text(c.owl_m)}-l{number_text(c.owl_lambda)}"
                if c.profile == "owl"
                else ""
            )
            parts.append(f"{c.prune_method}-{amount}{owl}")
        if c.quantizes:
            act = "-act" if c.act_order else ""
            if c.format != INT:
                acts = "" if c.activations == "none" else f"-{c.activations}"
                parts.append(f"{c.quant_method}-{c.format}{acts}{act}")
            else:
                width = f"mixed{c.bits}" if c.allocation == "mixed" else f"w{c.bits}"
                grid = grid_name(c.group_size, c.symmetric)
                parts.append(f"{c.quant_method}-{width}-{grid}{act}")
        if c.prunes and c.quantizes:
            parts.append(c.order + (f"-case{c.case}" if c.order == "prune_first" else ""))
        return " ".join(parts) or "base"

    def to_dict(self) -> dict:
        return asdict(self)
