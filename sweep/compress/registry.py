"""Names used in study specs -> the functions that implement them, with "did you mean".

Three kinds of method, each called with keyword arguments:

- a pruner: ``fn(weight, target=PruneTarget, stats=...) -> (weight, keep-mask)``;
- a quantizer: ``fn(weight, spec=QuantSpec, stats=..., mask=None, act_order=False, grid=None)
  -> weight``; with ``mask`` (True = kept) pruned weights stay exactly zero (Case B);
- a joint pruner, pruning and quantizing in one pass:
  ``fn(weight, target=PruneTarget, spec=QuantSpec, stats=..., grid=None) -> (weight, keep-mask)``.

``weight`` is (out, in) float32; ``stats`` the layer's ``LayerStats`` (None for data-free
methods); a ``grid`` (``QuantGrid``), when given, receives the scale and zero-point of every
group the method quantized. ``needs`` names the statistics a method reads ("hessian",
"sq_norms"), so that the driver knows what to collect.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from sweep.compress.formats import FORMATS, rtn_float
from sweep.compress.gptq import gptq_quantize
from sweep.compress.magnitude import magnitude_prune
from sweep.compress.rtn import QuantGrid, QuantSpec, rtn_quantize
from sweep.compress.sparsegpt import sparsegpt_prune
from sweep.compress.wanda import wanda_prune

if TYPE_CHECKING:
    from sweep.compress.calibration import LayerStats


@dataclass(frozen=True)
class PruneTarget:
    """What a pruner is asked for: the fraction of weights to remove, or, with ``nm``, at most
    N kept of every M consecutive inputs of a row (``sparsity`` is then 1 - N/M)."""

    sparsity: float
    nm: tuple[int, int] | None = None


class Registry:
    """A name -> implementation map that suggests near names on a typo."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., Any]] = {}
        self._needs: dict[str, frozenset[str]] = {}

    def register(
        self, name: str, needs: tuple[str, ...] = ()
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: register the function as method ``name``, reading ``needs``."""

        def add(fn: Callable[..., Any]) -> Callable[..., Any]:
            self._items[name] = fn
            self._needs[name] = frozenset(needs)
            return fn

        return add

    def names(self) -> list[str]:
        return sorted(self._items)

    def get(self, name: str) -> Callable[..., Any]:
        if name in self._items:
            return self._items[name]
        raise KeyError(unknown_name_message(self.kind, name, self.names()))

    def needs(self, name: str) -> frozenset[str]:
        """The calibration statistics that method ``name`` reads (empty for data-free ones)."""
        self.get(name)
        return self._needs[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items


def unknown_name_message(kind: str, name: str, allowed: list[str]) -> str:
    near = difflib.get_close_matches(name, allowed, n=1)
    hint = f" Did you mean {near[0]!r}?" if near else ""
    return f"unknown {kind} {name!r}; allowed: {', '.join(allowed)}.{hint}"


def required(stats: LayerStats | None, method: str, field: str) -> torch.Tensor:
    """``stats.<field>``, or a clear error when the method was given no calibration statistics."""
    value = None if stats is None else getattr(stats, field)
    if value is None:
        raise ValueError(
            f"{method} needs calibration statistics ({field}); "
            "pass calibration=<token ids> to compress_model"
        )
    return value


PRUNERS = Registry("pruning method")
QUANTIZERS = Registry("quantization method")
JOINT_PRUNERS = Registry("joint pruning method")


@PRUNERS.register("magnitude")
def _magnitude(
    weight: torch.Tensor, *, target: PruneTarget, stats: LayerStats | None
) -> tuple[torch.Tensor, torch.Tensor]:
    return magnitude_prune(weight, target.sparsity, target.nm)


@PRUNERS.register("wanda", needs=("sq_norms",))
def _wanda(
    weight: torch.Tensor, *, target: PruneTarget, stats: LayerStats | None
) -> tuple[torch.Tensor, torch.Tensor]:
    sq_norms = required(stats, "wanda", "sq_norms")
    return wanda_prune(weight, sq_norms, target.sparsity, target.nm)


@PRUNERS.register("sparsegpt", needs=("hessian",))
def _sparsegpt(
    weight: torch.Tensor, *, target: PruneTarget, stats: LayerStats | None
) -> tuple[torch.Tensor, torch.Tensor]:
    hessian = required(stats, "sparsegpt", "hessian")
    return sparsegpt_prune(weight, hessian, target.sparsity, target.nm)


@QUANTIZERS.register("rtn")
def _rtn(
    weight: torch.Tensor,
    *,
    spec: QuantSpec,
    stats: LayerStats | None,
    mask: torch.Tensor | None = None,
    act_order: bool = False,
    grid: QuantGrid | None = None,
) -> torch.Tensor:
    if spec.format != "int":
        return rtn_float(weight, FORMATS[spec.format], mask, grid, spec.tensor_scale)
    return rtn_quantize(weight, spec.bits, spec.group_size, spec.symmetric, mask, grid=grid)


@QUANTIZERS.register("gptq", needs=("hessian",))
def _gptq(
    weight: torch.Tensor,
    *,
    spec: QuantSpec,
    stats: LayerStats | None,
    mask: torch.Tensor | None = None,
    act_order: bool = False,
    grid: QuantGrid | None = None,
) -> torch.Tensor:
    hessian = required(stats, "gptq", "hessian")
    return gptq_quantize(
        weight,
        hessian,
        spec.bits,
        spec.group_size,
        spec.symmetric,
        act_order,
        mask,
        grid=grid,
        fmt=None if spec.format == "int" else FORMATS[spec.format],
        tensor_scale=spec.tensor_scale,
    )


@JOINT_PRUNERS.register("sparsegpt", needs=("hessian",))
def _sparsegpt_quantizing(
    weight: torch.Tensor,
    *,
    target: PruneTarget,
    spec: QuantSpec,
    stats: LayerStats | None,
    grid: QuantGrid | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    hessian = required(stats, "sparsegpt", "hessian")
    return sparsegpt_prune(weight, hessian, target.sparsity, target.nm, quantizer=spec, grid=grid)


__all__ = [
    "JOINT_PRUNERS",
    "PRUNERS",
    "QUANTIZERS",
    "PruneTarget",
    "QuantGrid",
    "QuantSpec",
    "Registry",
    "required",
]
