"""What a trial's result depends on besides its configuration, named by content.

A study's spec names its inputs by where they are (a model folder, a calibration file, a task
folder); what a trial measures depends on what those places hold. Each input is therefore
fingerprinted by its content, as the engine reads it (``sweep.spec.Fingerprints``):

- the weights: ``sweep.weights_fingerprint`` (a strided sample of every parameter, and the model's
  config, not the folder it was loaded from); the calibration cache's key is made from it too
  (``sweep.compress.calibration.calibration_key``), so the same weights in another folder find
  their statistics;
- the tokenizer: its whole vocabulary, rules and special tokens (``tokenizer_fingerprint``); a
  tokenizer replaced beside unchanged weights changes every prompt the model is given;
- the calibration set: the token ids it feeds the engine (``calibration_fingerprint``), so that
  a file edited in place, a function or a dataset returning other texts, or another tokenizer
  all count as another calibration set;
- the tasks: every document they evaluate, and their lm-eval configuration (prompt templates,
  choices, metrics) (``sweep.evaluation.harness.Evaluator``).

The first worker of a study pins them on the study; `run`, `worker`, `export` and `compress`
refuse inputs that differ, naming each (``changes``). The results table's key
(``ResultContext``) covers them, so a configuration computed on one calibration set is never
reused for another. The model's weights are fingerprinted by ``weights_fingerprint`` (its own
module, which the engine's calibration cache reads without the spec).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import torch

from sweep.compress.config import INT, CompressionConfig
from sweep.errors import UserError
from sweep.spec import Fingerprints, StudySpec, calibration_source
from sweep.weights_fingerprint import weights_fingerprint

__all__ = [
    "ENGINE_VERSION", "MIXED_ALLOCATION_VERSION", "InputsChangedError", "ResultContext",
    "calibration_fingerprint", "changes", "check_spec_inputs", "tokenizer_fingerprint",
    "weights_fingerprint",
]  # fmt: skip

ENGINE_VERSION = "3"  # bump when a change to the engine or metrics changes stored results
# how a mixed allocation spreads its widths: since version 2, one width per group of fused layers
# (sweep.compress.fused); results of version 1 (one width per layer) are not found again
MIXED_ALLOCATION_VERSION = 2
# how a float format is computed, where it changed after it was released: since nvfp4's version
# 2, its tensor scale is one per group of fused layers and its group scales round to the nearest
# e4m3 value, not up (its results of version 1 are not found again)
FORMAT_VERSIONS = {"nvfp4": 2}


class InputsChangedError(UserError, ValueError):
    """An input (weights, tokenizer, calibration tokens, task documents or prompts) is not what
    a study's trials, or a spec's configuration, were measured on."""


_WHAT = {
    "weights": "the weights of model {model} are not those {subject} measured on",
    "tokenizer": "the tokenizer of model {model} is not the one {subject} measured with",
    "calibration": (
        "the calibration tokens are not those {subject} calibrated on (the calibration "
        "{where} holds other texts, or the tokenizer changed)"
    ),
    "documents": (
        "the documents of the tasks are not those {subject} scored on (a task's files changed, "
        "or this machine builds other questions)"
    ),
    "prompts": (
        "the lm-eval configuration of the tasks (prompts, choices, metrics) is not the one "
        "{subject} scored with"
    ),
}


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of what a tokenizer does: its vocabulary and rules (the whole serialised
    ``tokenizers`` object of a fast tokenizer, else its vocabulary), its special tokens, and
    the settings that change the ids of a text (added BOS/EOS, maximum length, sides)."""
    digest = hashlib.sha256(b"sweep-tokenizer-v1")
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode())
    else:
        vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
        digest.update(json.dumps(vocab).encode())
    settings = {
        "class": type(tokenizer).__name__,
        "special": getattr(tokenizer, "special_tokens_map", {}),
        "pad": getattr(tokenizer, "pad_token", None),
        "model_max_length": getattr(tokenizer, "model_max_length", None),
        "padding_side": getattr(tokenizer, "padding_side", None),
        "truncation_side": getattr(tokenizer, "truncation_side", None),
        "add_bos": getattr(tokenizer, "add_bos_token", None),
        "add_eos": getattr(tokenizer, "add_eos_token", None),
        "chat_template": getattr(tokenizer, "chat_template", None),
    }
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def calibration_fingerprint(token_ids: torch.Tensor) -> str:
    """sha256 of the calibration set as the engine reads it: (samples, seq_len) token ids."""
    ids = token_ids.detach().to("cpu", torch.int64).contiguous()
    digest = hashlib.sha256(b"sweep-calibration-tokens-v1")
    digest.update(str(tuple(ids.shape)).encode())
    digest.update(ids.numpy().tobytes())
    return digest.hexdigest()


def changes(
    then: Fingerprints, now: Fingerprints, model: str, subject: str, where: str = "source"
) -> list[str]:
    """One line for each input known on both sides whose content differs: what changed, and
    the two fingerprints. ``subject`` reads as "study 'x' was" or "sweep-trial.yaml was"."""
    lines = []
    for name in then.changed(now):
        what = _WHAT[name].format(model=model, subject=subject, where=where)
        lines.append(
            f"{what} (fingerprint {getattr(then, name)[:12]} then, {getattr(now, name)[:12]} now)"
        )
    return lines


def check_spec_inputs(spec: StudySpec, now: Fingerprints, subject: str = "the spec was") -> None:
    """Refuse inputs other than those ``spec`` names by fingerprint (as `sweep export` writes
    them into sweep-trial.yaml), naming each that differs."""
    where = calibration_source(spec.calibration)
    lines = changes(spec.fingerprints, now, spec.model, subject, where)
    if lines:
        raise InputsChangedError("\n".join(lines))


@dataclass(frozen=True)
class ResultContext:
    """What, besides the compression config, determines a trial's result: the content of its
    inputs (weights, tokenizer, calibration tokens, task documents and prompts), not the paths
    that hold them, and the settings that act on them. ``key(config)`` names a result in the
    shared results table."""

    fields: dict[str, Any]

    @classmethod
    def of(cls, spec: StudySpec, fingerprints: Fingerprints) -> ResultContext:
        ev = spec.evaluation
        calibrated = fingerprints.calibration is not None and spec.calibration is not None
        return cls({
            "engine": ENGINE_VERSION,
            "inputs": fingerprints.model_dump(),
            "dtype": spec.dtype,
            "calibration_mode": spec.calibration.mode if calibrated else None,
            "evaluation": {
                "tasks": [t.model_dump() for t in ev.tasks],
                "perplexity_task": ev.perplexity_task,
                "limit": ev.limit,
                "max_length": ev.max_length,
            },
        })  # fmt: skip

    def key(self, config: CompressionConfig) -> str:
        canonical = config.canonical()
        config = canonical.to_dict()
        if config["format"] == INT:  # integer results keep the keys they had before formats
            del config["format"]
        if config["activations"] == "none":
            del config["activations"]
        keyed: dict[str, Any] = {"context": self.fields, "config": config}
        if canonical.allocation == "mixed":
            keyed["allocation_version"] = MIXED_ALLOCATION_VERSION
        if canonical.format in FORMAT_VERSIONS:
            keyed["format_version"] = FORMAT_VERSIONS[canonical.format]
        blob = json.dumps(keyed, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()
