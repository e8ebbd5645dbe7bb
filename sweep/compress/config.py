"""What one trial asks of the compression engine."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace

from sweep.compress.registry import JOINT_PRUNERS

UNSTRUCTURED = "unstructured"
ORDERS = ("prune_first", "quant_first", "joint")
CASES = ("A", "B")
SUPPORTED_BITS = (2, 3, 4, 8, 16)
PROFILES = ("uniform", "owl")  # how sparsity spreads over the layers
ALLOCATIONS = ("uniform", "mixed")  # how bit-widths spread over the layers
MIXED_BITS = (2, 3, 4, 8)  # the widths a mixed allocation gives layers, ``bits`` their average
OWL_M = 5.0  # OWL's defaults (Yin et al. 2024)
OWL_LAMBDA = 0.08
_NM = re.compile(r"^(\d+):(\d+)$")


def allocation_acts(bits: int) -> bool:
    """Whether a mixed allocation with an average of ``bits`` can differ from a uniform one: not
    at either end of MIXED_BITS (nor outside it), where every layer gets ``bits``."""
    return min(MIXED_BITS) < bits < max(MIXED_BITS)


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


@dataclass(frozen=True)
class CompressionConfig:
    """One point of the search space.

    ``sparsity`` is the fraction of compressible weights to prune (ignored by N:M patterns, whose
    sparsity is 1 - N/M). ``bits = 16`` means no quantization; ``group_size = None`` means one
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

    def __post_init__(self) -> None:
        nm = parse_pattern(self.pattern)
        if nm is None and not 0.0 <= self.sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {self.sparsity}")
        if self.bits not in SUPPORTED_BITS:
            raise ValueError(f"bits must be one of {SUPPORTED_BITS}, got {self.bits}")
        if self.group_size is not None and self.group_size <= 0:
            raise ValueError(f"group_size must be positive or None, got {self.group_size}")
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {self.order!r}")
        if self.case not in CASES:
            raise ValueError(f"case must be one of {CASES}, got {self.case!r}")
        if self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}, got {self.profile!r}")
        if self.profile == "owl" and nm is not None:
            raise ValueError(f"the owl profile spreads unstructured sparsity, not {self.pattern}")
        if not 0.0 < self.owl_lambda < 0.5 or self.owl_m <= 0:
            raise ValueError(
                f"owl_lambda must be in (0, 0.5) and owl_m positive, got {self.owl_lambda}, "
                f"{self.owl_m}"
            )
        if self.allocation not in ALLOCATIONS:
            raise ValueError(f"allocation must be one of {ALLOCATIONS}, got {self.allocation!r}")
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
        if not self.quantizes or not allocation_acts(self.bits):
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
            width = f"mixed{c.bits}" if c.allocation == "mixed" else f"w{c.bits}"
            parts.append(f"{c.quant_method}-{width}-{grid_name(c.group_size, c.symmetric)}{act}")
        if c.prunes and c.quantizes:
            parts.append(c.order + (f"-case{c.case}" if c.order == "prune_first" else ""))
        return " ".join(parts) or "base"

    def to_dict(self) -> dict:
        return asdict(self)
