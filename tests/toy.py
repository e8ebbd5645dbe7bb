"""A toy study for the orchestration tests: a tiny Llama that has learnt 48 facts, its lm-eval
task and a spec, built in seconds in a temp folder. Real model, real lm-eval, real storage:
only smaller, so that tests of workers, failures and bad input run fast."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import torch
import yaml

FACTS = 48
VALUES = 12
QUESTIONS_PER_FACT = 16  # distinct distractor sets: a trial takes seconds, so workers overlap

TASK_YAML = """\
task: toy_recall
dataset_path: json
dataset_kwargs:
  data_files:
    test: test.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "{{question}}"
doc_to_choice: "{{choices}}"
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def build_toy(folder: Path) -> Path:
    """Train the toy model and write it, its task and calibration text under ``folder``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    rng = random.Random(0)
    torch.manual_seed(0)
    keys = [f"k{i}" for i in range(FACTS)]
    values = [f"v{i}" for i in range(VALUES)]
    facts = {k: rng.choice(values) for k in keys}
    lines = [f"the value of {k} is {v} ." for k, v in facts.items()]
    words = sorted({w for line in lines for w in line.split()})
    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", *words])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="</s>", model_max_length=64,
    )  # fmt: skip
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        bos_token_id=1, eos_token_id=2, pad_token_id=2,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    ids = [tokenizer(line)["input_ids"] for line in lines]
    for _ in range(400):
        batch = torch.tensor(rng.sample(ids, 16))  # (16, 8)
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model_dir = folder / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)

    task_dir = folder / "tasks" / "toy_recall"
    task_dir.mkdir(parents=True)
    (task_dir / "toy_recall.yaml").write_text(TASK_YAML)
    with (task_dir / "test.jsonl").open("w") as out:
        for _ in range(QUESTIONS_PER_FACT):
            for k, v in facts.items():
                choices = [v, *rng.sample([x for x in values if x != v], 3)]
                rng.shuffle(choices)
                question = {"question": f"the value of {k} is", "choices": choices}
                out.write(json.dumps({**question, "answer": choices.index(v)}) + "\n")
    (folder / "calibration.txt").write_text("\n".join(lines * 8))
    return folder


def toy_spec(folder: Path, name: str, seed: int = 0, **search) -> Path:
    """A study of the toy model (random sampler with ``seed``); ``search`` overrides fields of
    its search space."""
    space = {
        "sparsity": {"values": [0.0, 0.25, 0.5]},
        "patterns": ["unstructured"],
        "prune_methods": ["magnitude"],
        "quant_methods": ["rtn"],
        "bits": [2, 3, 4, 8, 16],
        "group_sizes": [32],
        "orders": ["prune_first", "quant_first"],
        "cases": ["B"],
    }
    space.update(search)
    spec = {
        "name": name,
        "model": str(folder / "model"),
        "calibration": {
            "source": "file", "path": str(folder / "calibration.txt"), "samples": 8, "seq_len": 32,
        },
        "evaluation": {"tasks": ["toy_recall"], "include_path": str(folder / "tasks")},
        "search": space,
        "sampler": {"name": "random", "seed": seed},
        "trials": 4,
    }  # fmt: skip
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


SLOW_ENV = "TOY_SECONDS_PER_DOCUMENT"
SLOW_SCORER = f"""\
import os
import time


def process_results(doc, results):
    time.sleep(float(os.environ.get("{SLOW_ENV}", "0")))
    scores = [loglikelihood for loglikelihood, _ in results]
    return {{"acc": float(scores.index(max(scores)) == doc["answer"])}}
"""


def slow_toy_spec(toy: Path, folder: Path, name: str, **overrides) -> Path:
    """The toy study on its task scored by a function that sleeps ``SLOW_ENV`` seconds per
    document in a process given that variable: the same scores, longer trials; every trial has
    the full evaluation."""
    task = folder / "tasks" / "toy_recall"
    shutil.copytree(toy / "tasks" / "toy_recall", task)
    (task / "slow.py").write_text(SLOW_SCORER)
    config = yaml.safe_load((task / "toy_recall.yaml").read_text())
    config["dataset_kwargs"]["data_files"]["test"] = str(task / "test.jsonl")
    text = yaml.safe_dump(config) + "process_results: !function slow.process_results\n"
    (task / "toy_recall.yaml").write_text(text)
    data = yaml.safe_load(toy_spec(toy, name, **overrides).read_text())
    data["evaluation"]["include_path"] = str(folder / "tasks")
    data["evaluation"]["stages"] = {"mode": "off"}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path
