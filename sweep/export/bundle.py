"""`sweep export` and `sweep compress --out`: one folder that `from_pretrained` loads, holding the
compressed checkpoint, the spec fragment that reproduces it, the llm-compressor recipe, the model
card and the measurements."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from sweep.compress import CompressionConfig
from sweep.export import ExportError
from sweep.export.card import model_card
from sweep.export.fragment import trial_spec, write_trial_spec
from sweep.export.recipe import recipe_limits, recipe_yaml
from sweep.spec import StudySpec, meets_constraints

TRIAL_SPEC = "sweep-trial.yaml"
RECIPE = "recipe.yaml"
MEASUREMENTS = "measurements.json"


@dataclass(frozen=True)
class Source:
    """Where an exported configuration comes from."""

    study: str
    trial: int | None  # None: `sweep compress` on a spec
    model: str


def choose_trial(study: optuna.Study, number: int | None = None) -> optuna.trial.FrozenTrial:
    """Trial ``number`` (which must be complete), or by default the complete trial with the best
    SrCr among those that meet the study's constraints (the top of the SrCr-against-compression
    front)."""
    complete = [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if "srcr" in t.user_attrs
    ]  # fmt: skip
    if not complete:
        raise ExportError(f"study {study.study_name!r} has no complete trial to export")
    if number is None:
        feasible = [t for t in complete if meets_constraints(t.constraints)]
        if not feasible:
            raise ExportError(
                f"no complete trial of {study.study_name!r} meets the study's constraints; "
                "choose one with --trial"
            )
        return max(feasible, key=lambda t: (t.user_attrs["srcr"], t.user_attrs["tcr"]))
    for t in complete:
        if t.number == number:
            return t
    numbers = ", ".join(str(t.number) for t in complete[:20])
    raise ExportError(f"trial {number} is not a complete trial of {study.study_name!r}; "
                      f"complete trials: {numbers}")  # fmt: skip


def check_output_folder(out: Path) -> None:
    """Refuse to write over a folder that holds something other than an earlier export."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / TRIAL_SPEC).exists():
        raise ExportError(f"output folder {out} is not empty and holds no earlier export")


def write_bundle(
    out: Path,
    model: Any,
    tokenizer: Any,
    spec: StudySpec,
    config: CompressionConfig,
    grids: dict,
    dtype: Any,
    measured: dict[str, Any],
    base: dict[str, Any],
    source: Source,
) -> list[Path]:
    """Write everything into ``out``; returns the files written."""
    from sweep.export.checkpoint import write_checkpoint

    out.mkdir(parents=True, exist_ok=True)
    write_checkpoint(model, tokenizer, config, grids, out, dtype)
    origin = source.study if source.trial is None else f"trial {source.trial} of {source.study}"
    header = (
        f"{config.canonical().key()}: {origin}\n"
        f"Reproduce it with: sweep compress {TRIAL_SPEC} --out <folder>"
    )
    name = source.study if source.trial is None else f"{source.study}-trial-{source.trial}"
    write_trial_spec(trial_spec(spec, config, name), out / TRIAL_SPEC, header)
    (out / RECIPE).write_text(recipe_yaml(config))
    checkpoint_bytes = (out / "model.safetensors").stat().st_size
    record = {
        "source": {"study": source.study, "trial": source.trial, "model": source.model},
        "config": config.canonical().to_dict(),
        "config_key": config.canonical().key(),
        "measured": measured,
        "base_reference": base,
        "checkpoint_bytes": checkpoint_bytes,
    }
    (out / MEASUREMENTS).write_text(json.dumps(record, indent=2) + "\n")
    card = model_card(config, measured, base, record["source"], recipe_limits(config),
                      checkpoint_bytes)  # fmt: skip
    (out / "README.md").write_text(card)
    files = sorted(p for p in out.iterdir() if p.is_file())
    for path in files:
        path.chmod(0o644)  # some writers create private files; a checkpoint is for sharing
    return files
