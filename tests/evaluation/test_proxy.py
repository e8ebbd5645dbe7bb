import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sweep.evaluation.proxy import base_distribution, coarse_kl, held_out_tokens, kl_divergence

from ..conftest import REPO

DEMO = REPO / "sweep/demo/model"


def _logp(rows: int, vocab: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.log_softmax(3 * torch.randn(rows, vocab, generator=g), dim=-1)


def test_coarse_kl_is_zero_for_the_same_distribution_and_exact_with_every_token():
    p, q = _logp(50, 40, 0), _logp(50, 40, 1)
    top = p.topk(40, dim=-1)
    assert coarse_kl(top.values, top.indices, p).abs().max() < 1e-5
    full = (p.exp() * (p - q)).sum(-1)
    assert torch.allclose(coarse_kl(top.values, top.indices, q), full, atol=1e-4)


def test_coarse_kl_is_a_lower_bound_that_grows_with_k():
    p, q = _logp(50, 200, 2), _logp(50, 200, 3)
    full = (p.exp() * (p - q)).sum(-1)
    previous = torch.zeros(50)
    for k in (4, 16, 64, 200):
        top = p.topk(k, dim=-1)
        kl = coarse_kl(top.values, top.indices, q)
        assert (kl <= full + 1e-4).all()
        assert kl.mean() >= previous.mean() - 1e-6
        previous = kl


@pytest.fixture(scope="module")
def demo():
    model = AutoModelForCausalLM.from_pretrained(DEMO, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(DEMO)
    return model, tokenizer


def test_kl_of_the_demo_model_is_zero_for_itself_and_grows_with_noise(demo):
    model, tokenizer = demo
    text = (REPO / "sweep/demo/data/calibration.txt").read_text().splitlines()
    ids = held_out_tokens(text, tokenizer, n_tokens=512, seq_len=64)
    assert ids.shape == (8, 64)
    base = base_distribution(model, ids, k=16)
    assert base.positions == 8 * 63
    assert kl_divergence(model, base) < 1e-6
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    kls = []
    try:
        for scale in (0.05, 0.3):
            g = torch.Generator().manual_seed(0)
            with torch.no_grad():
                for n, p in model.named_parameters():
                    if p.ndim == 2 and "layers" in n:
                        p.copy_(weights[n] + scale * weights[n].std() * torch.randn(
                            p.shape, generator=g))  # fmt: skip
            kls.append(kl_divergence(model, base))
    finally:
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(weights[n])
    assert 0 < kls[0] < kls[1]


def test_too_little_text_is_refused(demo):
    _, tokenizer = demo
    with pytest.raises(ValueError, match="fewer than one sequence"):
        held_out_tokens(["a few words"], tokenizer, n_tokens=512, seq_len=64)
