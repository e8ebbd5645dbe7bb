"""The model card (README.md) of an exported checkpoint: what was done to the model, and every
measurement of the trial that chose it."""

from __future__ import annotations

from sweep.export.contents import Bundle
from sweep.metrics import METRICS
from sweep.runtimes import RUNTIMES
from sweep.zoo import hub_id


def model_card(bundle: Bundle, recipe_notes: list[str], checkpoint_bytes: int) -> str:
    """Markdown with a YAML header: the configuration, every measurement of the trial beside the
    base model's scores, how to load it, and how to reproduce it."""
    c = bundle.config.canonical()
    m, source = bundle.measurement, bundle.source
    lines = [
        "---",
        "library_name: transformers",
        f"base_model: {hub_id(source.model)}",
        "tags: [sweep, pruning, quantization, compressed-tensors]",
        "---",
        "",
        f"# {source.model} · {c.key()}",
        "",
        "Compressed by sweep (a search over pruning and quantization), "
        + (
            f"from trial {source.trial} of study `{source.study}`."
            if source.trial is not None
            else f"by the spec `{source.study}`."
        ),
        "",
        "## Configuration",
        "",
        "| field | value |",
        "|---|---|",
    ]
    fields = c.to_dict() | {"target_sparsity": round(c.target_sparsity, 6)}
    lines += [f"| {k} | `{v}` |" for k, v in fields.items()]
    if m.layers:
        lines += ["", "Layers differ (`bits` is their average, `sparsity` their mean): "
                  f"{m.layer_summary}. Each layer's choice is in `measurements.json` "
                  "(`measured.layers`: module -> [pruned fraction, bits]).", ""]  # fmt: skip
    lines += ["", "## Measurements", "", "| metric | value |", "|---|---|"]
    for metric in METRICS.values():
        value = m.value(metric.name)
        if value is not None:
            lines.append(f"| {metric.title} | {metric.show(value)} |")
    lines.append(f"| checkpoint size (model.safetensors) | {checkpoint_bytes / 1e6:.2f} MB |")
    if m.sr_low is not None and m.sr_high is not None and m.full:
        lines.append(f"| Sr, 95% interval | {m.sr_low:.3f} to {m.sr_high:.3f} |")
    lines += _tasks(bundle)
    lines += [
        "",
        "Sr is the mean over tasks of max(0, n(compressed)) / n(base), with n a score normalised "
        "so that random guessing is 0 and a perfect score 1; SrCr divides Sr by "
        "sqrt(1 - s) * log2(q) / 4 (s the sparsity, q the bit-width; averaged over the layers, "
        "weighted by their sizes, when layers differ).",
        "",
        "## Use",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        'model = AutoModelForCausalLM.from_pretrained("<this folder>")',
        'tokenizer = AutoTokenizer.from_pretrained("<this folder>")',
        "```",
        "",
    ]
    if c.quantizes and c.format != "int":
        stored = {"fp8": "`float-quantized`: e4m3 values, a 16-bit scale per row",
                  "nvfp4": "`nvfp4-pack-quantized`: e2m1 values in groups of 16, e4m3 scales and "
                           "an FP32 tensor scale",
                  "mxfp4": "`mxfp4-pack-quantized`: e2m1 values in groups of 32, power-of-two "
                           "scales"}[c.format]  # fmt: skip
        lines += [
            f"Quantized weights are stored as {c.format} (compressed-tensors {stored}), which "
            "vLLM also reads. The weights evaluated are those the checkpoint decodes to in its "
            "16-bit dtype; on a CPU in float32, load it with "
            "`quantization_config=CompressedTensorsConfig(run_compressed=False)`. Pruned weights "
            "are stored as zeros, so sparsity does not shrink the file.",
            "",
        ]
    elif c.quantizes:
        lines += [
            "Quantized weights are stored packed (compressed-tensors `pack-quantized`, which vLLM "
            "also reads) and dequantized by `transformers` on load. Pruned weights are stored "
            "as zeros, so sparsity does not shrink the file.",
            "",
        ]
    lines += _deployment(bundle, checkpoint_bytes)
    lines += [
        "## Reproduce",
        "",
        "`sweep compress sweep-trial.yaml --out <folder>` recomputes this checkpoint and its "
        "measurements. `recipe.yaml` is the closest llm-compressor recipe"
        + (":" if recipe_notes else " (equivalent)."),
    ]
    lines += [f"- {note}" for note in recipe_notes]
    return "\n".join(lines) + "\n"


def _tasks(bundle: Bundle) -> list[str]:
    """Each task against the base model: the scores and, where the trial has them, recovery
    (this model's score over the base model's), retention with its 95% interval, and flips."""
    m, base = bundle.measurement, bundle.base
    agreements = m.task_agreement()
    head = ["task", "random guess", "base model", "this model"]
    if agreements:
        head += ["recovery", "retention (95%)", "flips"]
    lines = ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for task, score in m.task_scores.items():
        cells = [task, f"{base.random_scores[task]:.3f}", f"{base.scores[task]:.3f}"]
        cells.append(f"{score:.3f}")
        if agreements:
            a = agreements[task]
            cells += [f"{a.recovery:.1%}",
                      f"{a.retention:.3f} ({a.retention_low:.3f}-{a.retention_high:.3f})",
                      f"{a.flips} of {a.documents} ({a.flip_rate:.1%})"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    if agreements:
        lines += [
            "",
            "Recovery is this model's score over the base model's. Flips are the documents whose "
            "answer turned right or wrong against the base model's: two models with the same "
            "score can disagree on many questions. Retention's interval is paired (the standard "
            "error of the per-document change from the base model), counting the task's "
            "documents as a sample of the questions it stands for.",
        ]
    return lines


def _deployment(bundle: Bundle, checkpoint_bytes: int) -> list[str]:
    """Where the checkpoint is meant to run, whether that runtime serves it, and what it holds."""
    target, verdict = bundle.spec.deploy, bundle.deployment
    if verdict is None:
        return [
            "## Deployment",
            "",
            "The study named no runtime (`deploy: {runtime: none}`): nothing here says whether "
            "a runtime serves this checkpoint.",
            "",
        ]
    runtime = RUNTIMES[target.runtime]
    gpu = f", compute capability {target.gpu}" if target.gpu and runtime.needs_gpu else ""
    lines = [
        "## Deployment",
        "",
        "| | |",
        "|---|---|",
        f"| runtime | {runtime.title}{gpu} |",
        f"| deployable | {'yes' if verdict.deployable else '**no**'} |",
        f"| why | {verdict.reason} |",
        f"| deploy ratio | {verdict.ratio:.2f}x (16-bit bytes / bytes the runtime holds) |",
        f"| served size | {verdict.held_bytes / 1e6:.2f} MB of weights ({runtime.holds}) |",
        "",
    ]
    if not verdict.deployable:
        lines += [
            f"**Exported with --force: {runtime.name} refuses this checkpoint** "
            f"({verdict.reason}).",
            "",
        ]
    return lines
