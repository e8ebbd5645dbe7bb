"""Where a causal LM keeps what the engine compresses: its transformer blocks, and the Linear
layers inside them."""

from __future__ import annotations

from torch import nn


def find_blocks(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks: the largest ModuleList whose items hold Linear layers."""
    best: nn.ModuleList | None = None
    best_size = 0
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            holds_linear = any(isinstance(m, nn.Linear) for m in module[0].modules())
            size = sum(p.numel() for p in module.parameters())
            if holds_linear and size > best_size:
                best, best_size = module, size
    if best is None:
        raise ValueError(f"found no transformer blocks in {type(model).__name__}")
    return best


def block_linears(model: nn.Module) -> list[dict[str, nn.Linear]]:
    """For each transformer block, its Linear layers by their full name in ``model``."""
    blocks = find_blocks(model)
    prefix = {id(m): name for name, m in model.named_modules()}
    out = []
    for block in blocks:
        name = prefix[id(block)]
        out.append(
            {
                f"{name}.{sub_name}": sub
                for sub_name, sub in block.named_modules()
                if isinstance(sub, nn.Linear)
            }
        )
    return out


def compressible_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """Every Linear inside the transformer blocks, by its full name in ``model``."""
    return {name: layer for linears in block_linears(model) for name, layer in linears.items()}
