"""Fused groups are found from the model: layers that read one input tensor, and an MoE block's
experts; never from the layers' names."""

import torch
from torch import nn

from sweep.compress.fused import fused_groups
from sweep.demo import MODEL_DIR
from sweep.model import load_model


def test_the_demo_has_q_k_v_and_gate_up_fused_in_each_of_its_blocks():
    model, _ = load_model(MODEL_DIR, dtype="auto", device="cpu")
    groups = fused_groups(model)
    blocks = model.config.num_hidden_layers
    assert len(groups) == 2 * blocks
    for i in range(blocks):
        attn, mlp = groups[2 * i], groups[2 * i + 1]
        assert attn == [f"model.layers.{i}.self_attn.{p}_proj" for p in "qkv"]
        assert mlp == [f"model.layers.{i}.mlp.{p}_proj" for p in ("gate", "up")]
    grouped = {n for g in groups for n in g}
    assert not any(n.endswith(("o_proj", "down_proj")) for n in grouped)  # read their own inputs


class Expert(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.w_in = nn.Linear(width, 2 * width, bias=False)
        self.w_out = nn.Linear(2 * width, width, bias=False)

    def forward(self, x):
        return self.w_out(torch.relu(self.w_in(x)))


class MoEBlock(nn.Module):
    """Oddly named layers: a shared input read by ``a`` and ``b``, ``c`` reading a copy of it,
    and experts that each receive a slice of the tokens."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.a = nn.Linear(width, width, bias=False)
        self.b = nn.Linear(width, width, bias=False)
        self.c = nn.Linear(width, width, bias=False)
        self.router = nn.Linear(width, 3, bias=False)
        self.experts = nn.ModuleList(Expert(width) for _ in range(3))

    def forward(self, x):
        h = x + self.a(x) + self.b(x) + self.c(x.clone())
        choice = self.router(h.tanh()).argmax(-1)
        out = torch.zeros_like(h)
        for i, expert in enumerate(self.experts):
            mask = choice == i
            if mask.any():
                out[mask] = expert(h[mask])
        return h + out


class ToyMoE(nn.Module):
    def __init__(self, width: int = 8, blocks: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(16, width)
        self.layers = nn.ModuleList(MoEBlock(width) for _ in range(blocks))

    def get_input_embeddings(self):
        return self.embed

    def forward(self, input_ids, use_cache=False):
        h = self.embed(input_ids)
        for layer in self.layers:
            h = layer(h)
        return h


def test_shared_inputs_and_experts_are_found_whatever_the_names():
    torch.manual_seed(0)
    groups = fused_groups(ToyMoE())
    for i in range(2):
        prefix = f"layers.{i}"
        assert [f"{prefix}.a", f"{prefix}.b"] in groups
        experts = [f"{prefix}.experts.{e}.{w}" for e in range(3) for w in ("w_in", "w_out")]
        assert experts in groups
    grouped = {n for g in groups for n in g}
    assert "layers.0.c" not in grouped and "layers.0.router" not in grouped
