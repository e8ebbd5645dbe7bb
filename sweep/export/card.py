"""The model card (README.md) of an exported checkpoint: what was done to the model, and every
measurement of the trial that chose it."""

from __future__ import annotations

from typing import Any

from sweep.compress import CompressionConfig

METRIC_LINES = (
    ("tcr", "TCr (theoretical compression rate)", "{:.4f}"),
    ("real_ratio", "real compression ratio (16-bit bytes / bytes written)", "{:.2f}x"),
    ("sr", "Sr (semantic retention)", "{:.4f}"),
    ("srcr", "SrCr (retention per capacity kept)", "{:.4f}"),
    ("sparsity", "measured sparsity of the pruning step", "{:.4f}"),
    ("zero_fraction", "fraction of exact zeros in the compressed weights", "{:.4f}"),
    ("perplexity", "word perplexity on the study's perplexity task", "{:.3f}"),
)


def model_card(
    config: CompressionConfig,
    trial: dict[str, Any],
    base: dict[str, Any],
    source: dict[str, Any],
    recipe_notes: list[str],
    checkpoint_bytes: int,
) -> str:
    """Markdown with a YAML header. ``trial`` holds the trial's stored metrics (``tcr``, ``sr``,
    ``task_scores``...), ``base`` the base reference (``scores``, ``random_scores``), ``source``
    the study, trial number, model and storage the export came from."""
    c = config.canonical()
    lines = [
        "---",
        "library_name: transformers",
        f"base_model: {source['model']}",
        "tags: [sweep, pruning, quantization, compressed-tensors]",
        "---",
        "",
        f"# {source['model']} · {c.key()}",
        "",
        "Compressed by sweep (a search over pruning and quantization), "
        + (
            f"from trial {source['trial']} of study `{source['study']}`."
            if source.get("trial") is not None
            else f"by the spec `{source['study']}`."
        ),
        "",
        "## Configuration",
        "",
        "| field | value |",
        "|---|---|",
    ]
    fields = c.to_dict() | {"sparsity": round(c.target_sparsity, 6)}
    lines += [f"| {k} | `{v}` |" for k, v in fields.items()]
    lines += ["", "## Measurements", "", "| metric | value |", "|---|---|"]
    for key, label, fmt in METRIC_LINES:
        value = trial.get(key)
        if value is not None:
            lines.append(f"| {label} | {fmt.format(value)} |")
    lines.append(f"| checkpoint size (model.safetensors) | {checkpoint_bytes / 1e6:.2f} MB |")
    lines += ["", "| task | random guess | base model | this model |", "|---|---|---|---|"]
    for task, score in trial.get("task_scores", {}).items():
        lines.append(
            f"| {task} | {base['random_scores'][task]:.3f} | {base['scores'][task]:.3f} | "
            f"{score:.3f} |"
        )
    lines += [
        "",
        "Sr is the mean over tasks of max(0, n(compressed)) / n(base), with n a score normalised "
        "so that random guessing is 0 and a perfect score 1; SrCr divides Sr by "
        "sqrt(1 - s) * log2(q) / 4 (s the sparsity, q the bit-width).",
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
    if c.quantizes:
        lines += [
            "Quantized weights are stored packed (compressed-tensors `pack-quantized`, which vLLM "
            "also reads) and dequantized by `transformers` on load. Pruned weights are stored "
            "as zeros, so sparsity does not shrink the file.",
            "",
        ]
    lines += [
        "## Reproduce",
        "",
        "`sweep compress sweep-trial.yaml --out <folder>` recomputes this checkpoint and its "
        "measurements. `recipe.yaml` is the closest llm-compressor recipe"
        + (":" if recipe_notes else " (equivalent)."),
    ]
    lines += [f"- {note}" for note in recipe_notes]
    return "\n".join(lines) + "\n"
