"""Per-document records of a grid: every configuration's score on every document of its study's
tasks, with the seconds each step took, computed once with the trial code and kept in
``bench-results/documents-<grid>.json``.

From them any sample, any sequence of samples (racing) and any interval can be replayed
exactly, without evaluating again: a sampled stage scores each document as the full pass does
(lm-eval scores one document's choices on their own). What a stage costs is measured here too:
each configuration's full pass (``eval_s``), KL pass (``kl_s``) and perplexity task where the
study has one (``perplexity_s``), and lm-eval's fixed cost of a call (``call_s``), from which
``bench.racing.Costs`` charges a stage.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from rich.console import Console
from rich.progress import track

from sweep.compress import CompressionConfig
from sweep.compress.activations import quantized_activations
from sweep.evaluation.harness import Evaluator, Scores, leaf_lists
from sweep.evaluation.measurement import BaseReference, measure
from sweep.evaluation.proxy import kl_divergence
from sweep.events import Events
from sweep.space import all_configs
from sweep.spec import StudySpec


def grid_order(configs: list[CompressionConfig]) -> list[CompressionConfig]:
    """Configurations by sparsity, then key: a run cut short leaves whole sparsity levels."""
    return sorted(configs, key=lambda c: (c.target_sparsity, c.key()))


def _score_every_document(evaluator: Evaluator) -> tuple[dict, dict, float, float | None, float]:
    """The tasks' scores and per-document scores, the seconds they took, the perplexity (None
    without a perplexity task) and its seconds."""
    tasks, docs = {}, {}
    t = time.perf_counter()
    for task in evaluator.spec.tasks:
        tasks[task.name], per_doc = evaluator.documents(task)
        docs[task.name] = leaf_lists(per_doc)
    eval_s = time.perf_counter() - t
    t = time.perf_counter()
    ppl = evaluator.perplexity() if evaluator.spec.perplexity_task else None
    return tasks, docs, eval_s, ppl, time.perf_counter() - t if ppl is not None else 0.0


def call_cost(evaluator: Evaluator, repeats: int = 5) -> float:
    """lm-eval's fixed cost of a call, in seconds: the median over ``repeats`` calls of each
    task on its first document alone (a median, as another job's load can stall one call)."""
    times = []
    for _ in range(repeats):
        for task in evaluator.spec.tasks:
            first_leaf = next(iter(evaluator.populations(task.name)))
            t = time.perf_counter()
            evaluator.documents(task, {first_leaf: [0]})
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def document_records(spec: StudySpec, path: Path, console: Console) -> dict:
    """The base model's and every configuration's per-document scores on ``spec``'s tasks,
    computing only what ``path`` does not hold yet (for this model, tasks and KL settings)."""
    from sweep.workers import prepare_runner

    stored = json.loads(path.read_text()) if path.exists() else {}
    with prepare_runner(spec, Events(), progress=False) as runner:
        evaluator = runner.evaluator
        assert evaluator is not None
        stages = spec.evaluation.stages
        context = [runner.fingerprints.model_dump(), stages.kl_tokens, stages.kl_seq_len]
        data = stored if stored.get("context") == context else {"context": context}
        if "base" not in data:
            runner.loaded.restore()
            tasks, docs, eval_s, ppl, ppl_s = _score_every_document(evaluator)
            data["base"] = {"tasks": tasks, "random": dict(evaluator.random_scores),
                            "documents": docs, "eval_s": eval_s, "call_s": call_cost(evaluator),
                            "perplexity": ppl, "perplexity_s": ppl_s}  # fmt: skip
            path.write_text(json.dumps(data))
        b = data["base"]
        base = BaseReference(b["tasks"], b["random"], b.get("perplexity"))
        records = data.setdefault("records", {})
        configs = grid_order(list(all_configs(spec.search)))
        todo = [c for c in configs if c.key() not in records]
        proxy = runner.proxy_base() if todo else None
        for config in track(todo, description="per-document records", console=console):
            compressed = runner.compress(config)
            model = runner.loaded.model
            if config.key() == "base":  # the base model itself: measured above
                kl, kl_s, tasks, docs, eval_s = 0.0, 0.0, b["tasks"], b["documents"], b["eval_s"]
                ppl, ppl_s = b.get("perplexity"), b.get("perplexity_s", 0.0)
            else:
                with quantized_activations(model, config.activations, compressed.input_scales):
                    t = time.perf_counter()
                    assert proxy is not None
                    kl = kl_divergence(model, proxy)
                    kl_s = time.perf_counter() - t
                    tasks, docs, eval_s, ppl, ppl_s = _score_every_document(evaluator)
            scores = Scores(tasks, ppl)
            m = measure(config, compressed, scores, base, runner.loaded.inventory, {})
            records[config.key()] = {
                "config": config.to_dict(),
                "full": {**m.to_dict(), "kl": kl},
                "documents": docs,
                "kl_s": kl_s,
                "eval_s": eval_s,
                "perplexity_s": ppl_s,
                "compress_s": compressed.seconds,
            }
            path.write_text(json.dumps(data))
            console.print(
                f"{config.key()}: Sr {m.sr:.3f}, KL {kl:.3f}, tasks {eval_s:.0f} s, "
                f"perplexity {ppl_s:.0f} s, compress {compressed.seconds:.0f} s"
            )
    # records of configurations another grid of the same study computed are kept, not returned
    return {**data, "records": {c.key(): records[c.key()] for c in configs}}


def remeasure_call_cost(spec: StudySpec, path: Path, console: Console) -> None:
    from sweep.workers import prepare_runner

    data = json.loads(path.read_text())
    with prepare_runner(spec, Events(), progress=False) as runner:
        assert runner.evaluator is not None
        before, data["base"]["call_s"] = data["base"]["call_s"], call_cost(runner.evaluator)
    path.write_text(json.dumps(data))
    console.print(f"lm-eval's cost of a call: {data['base']['call_s']:.3f} s (was {before:.3f} s)")


def main() -> None:
    import argparse

    from sweep.spec import load_spec

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--call-cost", action="store_true",
                        help="measure lm-eval's fixed cost of a call again (on a quiet machine) "
                             "and store it in --out's records, computing nothing else")  # fmt: skip
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.call_cost:
        remeasure_call_cost(load_spec(args.spec), args.out, Console())
    else:
        document_records(load_spec(args.spec), args.out, Console())


if __name__ == "__main__":
    main()
