"""The engine benchmark runs end to end on a tiny random Llama (that it runs, not how fast)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from bench.engine import CASES, PerplexityMeter, print_table, run_engine_bench, weight_stats

ROW_KEYS = {"config", "mode", "ours_s", "peer_s", "speedup", "ours_ppl", "peer_ppl"}
TEXT = "the cat sat on a mat and the dog ran to the red barn by the old mill"
WORDS = TEXT.split(" ")


pytestmark = pytest.mark.usefixtures("one_thread")


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    tok.train_from_iterator([" ".join(WORDS)], trainers.WordLevelTrainer(special_tokens=specials))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        model_max_length=64,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )


def _perplexity_task(folder: Path) -> Path:
    task = folder / "tiny_ppl"
    task.mkdir(parents=True)
    lines = [" ".join(WORDS[i : i + 8]) for i in range(0, len(WORDS) - 8, 3)]
    (task / "test.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in lines))
    (task / "tiny_ppl.yaml").write_text(
        "task: tiny_ppl\ndataset_path: json\n"
        "dataset_kwargs:\n  data_files:\n    test: test.jsonl\n"
        "test_split: test\noutput_type: loglikelihood_rolling\n"
        'doc_to_text: ""\ndoc_to_target: "{{text}}"\n'
        "metric_list:\n  - metric: word_perplexity\n    aggregation: weighted_perplexity\n"
        "    higher_is_better: false\n"
    )
    return folder


@pytest.mark.parametrize(
    ("name", "modes"),
    [
        ("gptq-w4-g128", ["cached", "sequential"]),
        ("rtn-nvfp4a16", ["data-free"]),  # no calibration: one mode
        ("gptq-nvfp4-w4a4", ["cached", "sequential"]),  # activations calibrated on both sides
    ],
)
def test_engine_bench_runs_one_config(tmp_path: Path, name: str, modes: list[str]):
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    before = {n: p.clone() for n, p in model.state_dict().items()}
    calibration = torch.randint(4, len(tokenizer), (4, 32))  # (samples, seq_len)
    meter = PerplexityMeter(tokenizer, "tiny_ppl", [_perplexity_task(tmp_path / "tasks")])
    case = next(c for c in CASES if c.name == name)

    rows = run_engine_bench(model, tokenizer, calibration, meter, [case], batch_size=2)

    assert [r["mode"] for r in rows] == modes
    for row in rows:
        assert set(row) >= ROW_KEYS
        assert row["config"] == case.name
        for key in ("ours_s", "peer_s", "speedup", "ours_ppl", "peer_ppl", "base_ppl"):
            assert math.isfinite(row[key]) and row[key] > 0, key
        assert 2 < row["ours_max_levels"] <= 16 and 2 < row["peer_max_levels"] <= 16
    assert (rows[0]["ours_cold_s"] is None) == (modes == ["data-free"])
    assert len({r["peer_s"] for r in rows}) == 1  # the peer runs once per config
    assert all(torch.equal(p, before[n]) for n, p in model.state_dict().items())  # base untouched
    print_table(rows)


def test_weight_stats_counts_zeros_and_levels():
    from torch import nn

    from sweep.compress.driver import compressible_linears

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(8, 2, bias=False)

    model = nn.Module()
    model.layers = nn.ModuleList([Block()])
    weight = next(iter(compressible_linears(model).values())).weight
    with torch.no_grad():
        weight.copy_(torch.tensor([[0.0, 0, 1, 1, 2, 2, 3, 3], [0, 0, 0, 0, 5, 5, 5, 5]]))
    zeros, levels = weight_stats(model, group=4)
    assert zeros == pytest.approx(6 / 16)
    assert levels == 2
