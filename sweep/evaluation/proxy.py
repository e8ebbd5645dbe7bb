"""Stage 0 of a trial's evaluation: how far the compressed model's next-token distributions
moved from the base model's, as a KL divergence over a fixed set of held-out tokens.

The base side is reduced to each position's top-k log-probabilities plus the mass left over
(``BaseDistribution``); the divergence is then that of the two distributions coarsened to those
k + 1 outcomes, which by the data-processing inequality is at most the full KL and converges to
it as k grows. It takes one forward pass of the compressed model: seconds where an evaluation
takes minutes. Its rank correlation with benchmark scores is strong among broken models and weak
among near-lossless ones, so the tool stores and shows it, and decides with stage 1 (a sample of
each task's documents, ``sweep.evaluation.stages``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

TOP_K = 32


@dataclass(frozen=True)
class BaseDistribution:
    """The base model's next-token distribution at every held-out position, reduced to its
    top-k: log-probabilities ``logp`` and token ids ``ids``, both (positions, k)."""

    token_ids: torch.Tensor  # (sequences, seq_len): the held-out tokens
    logp: torch.Tensor
    ids: torch.Tensor

    @property
    def positions(self) -> int:
        return self.logp.shape[0]


def _log_rest(logp_top: torch.Tensor) -> torch.Tensor:
    """log(1 - sum(exp(logp_top))) per row: the log-mass outside the top-k, kept finite."""
    top = torch.logsumexp(logp_top, dim=-1).clamp(max=0.0)
    return torch.log(-torch.expm1(top)).clamp(min=-80.0)  # -expm1(x) = 1 - exp(x), exactly


def coarse_kl(base_logp: torch.Tensor, base_ids: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """KL(base || compressed) per position over the base's top-k tokens and the rest lumped.

    ``base_logp``, ``base_ids``: (positions, k); ``logq``: (positions, vocab), the compressed
    model's log-probabilities. Returns (positions,), each >= 0.
    """
    q_top = logq.gather(-1, base_ids)
    p_top = base_logp.exp()
    kl = (p_top * (base_logp - q_top)).sum(-1)
    p_rest_log, q_rest_log = _log_rest(base_logp), _log_rest(q_top)
    kl = kl + p_rest_log.exp() * (p_rest_log - q_rest_log)
    return kl.clamp(min=0.0)


def _next_token_logp(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of every next token, (positions, vocab), in float32; the last position
    of each sequence, which has no next token, is dropped."""
    logits = model(input_ids=ids).logits[:, :-1, :]
    return torch.log_softmax(logits.float(), dim=-1).reshape(-1, logits.shape[-1])


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def base_distribution(
    model: nn.Module, token_ids: torch.Tensor, k: int = TOP_K
) -> BaseDistribution:
    """The base model's top-k next-token log-probabilities at every held-out position."""
    logps, ids = [], []
    device = _device(model)
    for row in token_ids:  # one sequence at a time: a (seq_len, vocab) block stays small
        top = _next_token_logp(model, row[None].to(device)).topk(k, dim=-1)
        logps.append(top.values.cpu())
        ids.append(top.indices.cpu())
    return BaseDistribution(token_ids, torch.cat(logps), torch.cat(ids))


@torch.no_grad()
def kl_divergence(model: nn.Module, base: BaseDistribution) -> float:
    """Mean KL(base || model) per held-out position, in nats (see ``coarse_kl``)."""
    device = _device(model)
    total, start = 0.0, 0
    for row in base.token_ids:
        logq = _next_token_logp(model, row[None].to(device))
        end = start + logq.shape[0]
        kl = coarse_kl(base.logp[start:end].to(device), base.ids[start:end].to(device), logq)
        total += float(kl.sum())
        start = end
    return total / base.positions


def held_out_tokens(texts: list[str], tokenizer, n_tokens: int, seq_len: int) -> torch.Tensor:
    """The first ``n_tokens`` tokens of ``texts`` (joined, in order), cut into sequences of
    ``seq_len``: (sequences, seq_len). Fewer sequences when the texts run out; none is an error."""
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if len(ids) >= n_tokens:
            break
    rows = min(len(ids), n_tokens) // seq_len
    if rows == 0:
        raise ValueError(
            f"the texts hold {len(ids)} tokens, fewer than one sequence of {seq_len}: "
            "the KL proxy has nothing to measure"
        )
    return torch.tensor(ids[: rows * seq_len], dtype=torch.long).reshape(rows, seq_len)
