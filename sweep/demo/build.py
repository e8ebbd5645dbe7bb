"""Build the embedded demo: corpus -> tasks and calibration -> train -> save -> evaluate -> check.

Run with `python -m sweep.demo.build` (11 to 15 minutes on 2 CPU cores; `--monitor`
prints the three accuracies every 200 steps). Writes
`sweep/demo/tasks/`, `sweep/demo/data/calibration.txt` and `sweep/demo/model/` (weights,
tokenizer and `scores.json` with the base model's scores and the compression checks of
`sweep.demo.criteria`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
import yaml
from transformers import PreTrainedTokenizerFast

from sweep.demo import (
    CALIBRATION_FILE,
    DEMO_TASKS,
    MODEL_DIR,
    PERPLEXITY_TASK,
    TASKS_DIR,
    corpus,
    criteria,
)
from sweep.demo.train import TrainConfig, build_tokenizer, describe, pack, save, train

SEED = 0
N_CALIBRATION = 512

ACC = [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]
PERPLEXITY_METRICS = [
    {"metric": m} for m in ("word_perplexity", "byte_perplexity", "bits_per_byte")
]


def task_yaml(name: str, multiple_choice: bool) -> dict[str, object]:
    """The lm-eval config of a demo task; `data_files` is relative to the task's folder."""
    config: dict[str, object] = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": "test.jsonl"}},
        "test_split": "test",
    }
    if multiple_choice:
        config |= {
            "output_type": "multiple_choice",
            "doc_to_text": "{{context}}",
            "doc_to_choice": "choices",
            "doc_to_target": "answer",
            "metric_list": ACC,
        }
    else:
        config |= {
            "output_type": "loglikelihood_rolling",
            "doc_to_text": "",
            "doc_to_target": "{{text}}",
            "metric_list": PERPLEXITY_METRICS,
        }
    return config | {"metadata": {"version": 1.0}}


def write_task(name: str, rows: list[dict[str, object]], multiple_choice: bool) -> None:
    """Write `tasks/<name>/<name>.yaml` and `tasks/<name>/test.jsonl`."""
    folder = TASKS_DIR / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(task_yaml(name, multiple_choice),
                                                         sort_keys=False))  # fmt: skip
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_data(world: corpus.World) -> dict[str, list[corpus.Question]]:
    """Write the four task folders and the calibration file; returns the questions by task."""
    questions = {
        "demo_recall": corpus.recall_questions(world, SEED),
        "demo_arithmetic": corpus.arithmetic_questions(corpus.arithmetic_pairs(SEED)[1], SEED),
        "demo_reasoning": corpus.reasoning_questions(SEED),
    }
    for name, qs in questions.items():
        rows = [{"context": q.context, "choices": q.choices, "answer": q.answer} for q in qs]
        write_task(name, rows, multiple_choice=True)
    texts = corpus.perplexity_lines(world, SEED)
    write_task(PERPLEXITY_TASK, [{"text": t} for t in texts], multiple_choice=False)
    eval_puzzles = {corpus.puzzle_key(q) for q in questions["demo_reasoning"]}
    stream = corpus.documents(world, SEED + 100, corpus.BALANCED, eval_puzzles)
    CALIBRATION_FILE.parent.mkdir(parents=True, exist_ok=True)
    CALIBRATION_FILE.write_text("\n".join(corpus.take(stream, N_CALIBRATION)) + "\n")
    return questions


def materialize_tasks(dest: Path) -> Path:
    """Copy the task folders to `dest` with absolute `data_files` paths; returns `dest`."""
    for folder in sorted(p for p in TASKS_DIR.iterdir() if p.is_dir()):
        target = dest / folder.name
        shutil.copytree(folder, target, dirs_exist_ok=True)
        for path in target.glob("*.yaml"):
            config = yaml.safe_load(path.read_text())
            files = config["dataset_kwargs"]["data_files"]
            config["dataset_kwargs"]["data_files"] = {k: str(target / v) for k, v in files.items()}
            path.write_text(yaml.safe_dump(config, sort_keys=False))
    return dest


def evaluate(model_dir: Path = MODEL_DIR, batch_size: int = 32) -> dict[str, dict[str, float]]:
    """Score the saved model (float32 compute) on the demo tasks with lm-eval, offline."""
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        os.environ.setdefault("HF_HOME", str(Path(tmp) / "hf"))  # read when datasets is imported
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device="cpu",
                  max_length=tokenizer.model_max_length)  # fmt: skip
        manager = TaskManager(include_path=str(materialize_tasks(Path(tmp) / "tasks")))
        out = simple_evaluate(model=lm, tasks=[*DEMO_TASKS, PERPLEXITY_TASK],
                              task_manager=manager, random_seed=SEED)  # fmt: skip
    scores: dict[str, dict[str, float]] = {}
    for task, metrics in out["results"].items():
        scores[task] = {k.split(",")[0]: float(v) for k, v in metrics.items()
                        if "," in k and isinstance(v, int | float)}  # fmt: skip
    return scores


def print_table(scores: dict[str, dict[str, float]]) -> None:
    """A plain-text table of the scores."""
    print(f"{'task':<18} {'metric':<16} {'value':>10}")
    for task, metrics in scores.items():
        for metric, value in metrics.items():
            print(f"{task:<18} {metric:<16} {value:>10.4f}")


def training_blocks(
    world: corpus.World,
    tokenizer: PreTrainedTokenizerFast,
    cfg: TrainConfig,
    eval_puzzles: set[str],
) -> torch.Tensor:
    """The curriculum as (steps * batch_size, seq_len) token blocks, in training order."""
    generator = torch.Generator().manual_seed(cfg.seed)
    phases = []
    for i, (share, mixture) in enumerate(corpus.CURRICULUM):
        n_blocks = round(share * cfg.steps) * cfg.batch_size
        stream = corpus.documents(world, SEED + 1 + i, mixture, eval_puzzles)
        blocks = torch.empty(0, cfg.seq_len, dtype=torch.long)
        while len(blocks) < n_blocks:
            blocks = torch.cat([blocks, pack(corpus.take(stream, 4000), tokenizer, cfg.seq_len)])
        phases.append(blocks[torch.randperm(len(blocks), generator=generator)[:n_blocks]])
    return torch.cat(phases)


def quick_accuracy(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast, questions: list[corpus.Question]
) -> float:
    """Multiple-choice accuracy by summed log-likelihood, like lm-eval's `acc` (for monitoring)."""
    correct = 0
    with torch.no_grad():
        for q in questions:
            n_ctx = len(tokenizer(q.context, add_special_tokens=False)["input_ids"])
            texts = [f"{q.context} {choice}" for choice in q.choices]
            enc = tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
            ids, mask = enc["input_ids"], enc["attention_mask"]  # (4, T)
            logp = model(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)
            token_logp = logp[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]  # (4, T-1)
            token_logp = token_logp * mask[:, 1:]
            scores = token_logp[:, n_ctx - 1 :].sum(-1)
            correct += int(scores.argmax().item() == q.answer)
    return correct / len(questions)


def build(cfg: TrainConfig, skip_train: bool = False, monitor: bool = False) -> dict[str, object]:
    """Run the whole pipeline; returns what it writes to `model/scores.json`."""
    world = corpus.make_world(SEED)
    questions = write_data(world)
    info: dict[str, object] = {}
    if not skip_train:
        eval_puzzles = {corpus.puzzle_key(q) for q in questions["demo_reasoning"]}
        texts = corpus.vocabulary_texts(world, SEED) + corpus.perplexity_lines(world, SEED)
        texts += [f"{q.context} {c}" for qs in questions.values() for q in qs for c in q.choices]
        tokenizer = build_tokenizer(texts, max_length=cfg.seq_len)
        blocks = training_blocks(world, tokenizer, cfg, eval_puzzles)  # (steps * B, seq_len)

        def report(step: int, model: torch.nn.Module) -> str:
            accs = {k: quick_accuracy(model, tokenizer, qs[::5]) for k, qs in questions.items()}
            return " ".join(f"{k.removeprefix('demo_')} {v:.2f}" for k, v in accs.items())

        model, log = train(cfg, blocks, tokenizer, report if monitor else None)
        if MODEL_DIR.exists():
            shutil.rmtree(MODEL_DIR)
        save(model, tokenizer, MODEL_DIR)
        info = {
            "params": sum(p.numel() for p in model.parameters()),
            "vocab_size": len(tokenizer),
            "train_seconds": round(log["train_seconds"], 1),
            "final_loss_ema": round(log["final_loss_ema"], 4),
            "train": describe(cfg),
        }
    start = time.perf_counter()
    scores = evaluate(MODEL_DIR)
    info |= {"eval_seconds": round(time.perf_counter() - start, 1)}
    print_table(scores)
    path = MODEL_DIR / "scores.json"
    previous = json.loads(path.read_text()) if skip_train and path.exists() else {}
    result = previous | {"scores": scores, "eval_dtype": "float32"} | info
    result["file_bytes"] = (MODEL_DIR / "model.safetensors").stat().st_size
    result["criteria"] = criteria.check(MODEL_DIR)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    parser.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE",
        help="override a training setting, e.g. --set weight_decay=1.0 (for experiments)",
    )  # fmt: skip
    parser.add_argument("--eval-only", action="store_true", help="re-score the saved model")
    parser.add_argument(
        "--monitor", action="store_true", help="print task accuracies while training"
    )
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1))
    cfg = TrainConfig(steps=args.steps)
    for item in args.set:
        field, _, value = item.partition("=")
        if not hasattr(cfg, field):
            parser.error(f"--set {item}: TrainConfig has no field {field!r}")
        current = getattr(cfg, field)
        parsed = value.lower() in {"1", "true", "yes"} if isinstance(current, bool) else value
        setattr(cfg, field, type(current)(parsed))
    build(cfg, skip_train=args.eval_only, monitor=args.monitor)


if __name__ == "__main__":
    main()
