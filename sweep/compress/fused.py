"""Which Linear layers a runtime fuses into one kernel, found from the model rather than from
names: layers that read the very same input tensor (q/k/v, gate/up: they share a Hessian in the
engine), and the experts of an MoE block (a list of like modules inside a block, each holding
Linears). A runtime that fuses them (vLLM) needs one quantization scheme per group."""

from __future__ import annotations

import torch
from torch import nn

from sweep.compress.blocks import block_linears, find_blocks


class _Groups:
    """Union-find over layer names."""

    def __init__(self, names: list[str]) -> None:
        self.parent = {n: n for n in names}

    def find(self, n: str) -> str:
        while self.parent[n] != n:
            self.parent[n] = self.parent[self.parent[n]]
            n = self.parent[n]
        return n

    def join(self, a: str, b: str) -> None:
        self.parent[self.find(b)] = self.find(a)


@torch.no_grad()
def fused_groups(model: nn.Module) -> list[list[str]]:
    """The groups (of two or more) of compressible Linears that must share a scheme, each in
    the model's order, by full module name."""
    return _groups(model, experts=True)


@torch.no_grad()
def shared_input_groups(model: nn.Module) -> list[list[str]]:
    """The groups (of two or more) of compressible Linears that read the same input (q/k/v,
    gate/up; within one expert, not across experts): what a runtime runs as one matrix."""
    return _groups(model, experts=False)


def _groups(model: nn.Module, experts: bool) -> list[list[str]]:
    linears = {name: layer for block in block_linears(model) for name, layer in block.items()}
    groups = _Groups(list(linears))
    _join_shared_inputs(model, linears, groups)
    if experts:
        _join_experts(model, groups)
    members: dict[str, list[str]] = {}
    for name in linears:
        members.setdefault(groups.find(name), []).append(name)
    return [g for g in members.values() if len(g) > 1]


def _join_shared_inputs(model: nn.Module, linears: dict[str, nn.Linear], groups: _Groups) -> None:
    """One forward of two tokens, noting which layers receive the same tensor object."""
    readers: dict[int, tuple[torch.Tensor, str]] = {}

    def hook(name: str):
        def seen(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            x = args[0]
            first = readers.get(id(x))
            if first is not None and first[0] is x:
                groups.join(first[1], name)
            else:
                readers[id(x)] = (x, name)  # the tensor is kept, so its id is not reused

        return seen

    handles = [layer.register_forward_hook(hook(n)) for n, layer in linears.items()]
    try:
        device = model.get_input_embeddings().weight.device
        model(input_ids=torch.zeros((1, 2), dtype=torch.long, device=device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()


def _join_experts(model: nn.Module, groups: _Groups) -> None:
    """Every Linear of an MoE block's experts (a ModuleList of two or more like modules inside a
    transformer block, each holding Linears) in one group."""
    names = {id(m): n for n, m in model.named_modules()}
    for block in find_blocks(model):
        for module in block.modules():
            if not isinstance(module, nn.ModuleList) or len(module) < 2:
                continue
            kinds = {type(item) for item in module}
            if len(kinds) != 1 or isinstance(module[0], nn.Linear):
                continue
            inside = [
                names[id(sub)]
                for item in module
                for sub in item.modules()
                if isinstance(sub, nn.Linear) and names.get(id(sub)) in groups.parent
            ]
            for other in inside[1:]:
                groups.join(inside[0], other)
