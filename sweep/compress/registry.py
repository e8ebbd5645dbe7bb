"""Names used in study specs -> the functions that implement them, with "did you mean".

Every pruner is called as ``fn(weight, sparsity, nm, stats) -> (weight, keep-mask)`` and every
quantizer as ``fn(weight, bits, group_size, symmetric, mask, stats, act_order=False, grid=None)
-> weight``; a joint pruner (prune and quantize in one pass) as
``fn(weight, sparsity, nm, stats, spec, grid=None)``. A ``grid`` (``QuantGrid``), when given,
receives the scale and zero-point of every group the method quantized.
``stats`` is the layer's ``LayerStats`` (None for data-free methods); ``needs`` names the
statistics a method reads ("hessian", "sq_norms"), so the driver knows what to collect.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from sweep.compress.gptq import gptq_quantize
from sweep.compress.magnitude import magnitude_prune
from sweep.compress.rtn import QuantGrid, QuantSpec, rtn_quantize
from sweep.compress.sparsegpt import sparsegpt_prune
from sweep.compress.wanda import wanda_prune

if TYPE_CHECKING:
    from sweep.compress.calibration import LayerStats


class Registry:
    """A name -> implementation map that suggests near names on a typo."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., Any]] = {}
        self._needs: dict[str, frozenset[str]] = {}

    def register(self, name: str, fn: Callable[..., Any], needs: tuple[str, ...] = ()) -> None:
        self._items[name] = fn
        self._needs[name] = frozenset(needs)

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
PRUNERS.register(
    "magnitude", lambda weight, sparsity, nm, stats: magnitude_prune(weight, sparsity, nm)
)
PRUNERS.register(
    "wanda",
    lambda weight, sparsity, nm, stats: wanda_prune(
        weight, required(stats, "wanda", "sq_norms"), sparsity, nm
    ),
    needs=("sq_norms",),
)
PRUNERS.register(
    "sparsegpt",
    lambda weight, sparsity, nm, stats: sparsegpt_prune(
        weight, required(stats, "sparsegpt", "hessian"), sparsity, nm
    ),
    needs=("hessian",),
)

QUANTIZERS = Registry("quantization method")
QUANTIZERS.register(
    "rtn",
    lambda weight, bits, group_size, symmetric, mask, stats, act_order=False, grid=None: (
        rtn_quantize(weight, bits, group_size, symmetric, mask, grid=grid)
    ),
)
QUANTIZERS.register(
    "gptq",
    lambda weight, bits, group_size, symmetric, mask, stats, act_order=False, grid=None: (
        gptq_quantize(
            weight,
            required(stats, "gptq", "hessian"),
            bits,
            group_size,
            symmetric,
            act_order,
            mask,
            grid=grid,
        )
    ),
    needs=("hessian",),
)

JOINT_PRUNERS = Registry("joint pruning method")
JOINT_PRUNERS.register(
    "sparsegpt",
    lambda weight, sparsity, nm, stats, spec, grid=None: sparsegpt_prune(
        weight, required(stats, "sparsegpt", "hessian"), sparsity, nm, quantizer=spec, grid=grid
    ),
    needs=("hessian",),
)

__all__ = [
    "JOINT_PRUNERS",
    "PRUNERS",
    "QUANTIZERS",
    "QuantGrid",
    "QuantSpec",
    "Registry",
    "required",
]
