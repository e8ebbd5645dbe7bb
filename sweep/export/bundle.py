"""`sweep export` and `sweep compress --out`: one folder that `from_pretrained` loads, holding the
compressed checkpoint, the spec fragment that reproduces it, the llm-compressor recipe, the model
card and the measurements, and a manifest of those files: the folder is the export's own
(``sweep.owned_folder``)."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
from optuna.trial import TrialState

from sweep.compress.rtn import QuantGrid
from sweep.evaluation.measurement import Stage
from sweep.export import ExportError
from sweep.export.card import model_card
from sweep.export.checkpoint import WEIGHTS_FILE, grid_widths, write_checkpoint
from sweep.export.contents import Bundle
from sweep.export.fragment import trial_spec, write_trial_spec
from sweep.export.recipe import recipe_limits, recipe_yaml
from sweep.owned_folder import OwnedFolder
from sweep.record import TrialRecord, trial_records
from sweep.spec import DeploySpec
from sweep.trial import TrialRunner

TRIAL_SPEC = "sweep-trial.yaml"
RECIPE = "recipe.yaml"
MEASUREMENTS = "measurements.json"
MANIFEST = "sweep-export.json"  # the files an export wrote: the folder's, and no others


def choose_trial(study: optuna.Study, number: int | None = None) -> TrialRecord:
    """Trial ``number`` (which must be complete), or by default the trial with the best SrCr
    among those that had their full evaluation and meet the study's constraints. A trial that
    staged evaluation stopped is never exported: it has no perplexity, and after its sample
    its Sr is an estimate."""
    records = [r for r in trial_records(study, TrialState.COMPLETE) if r.measured]
    stopped = {r.number: r.measurement.stage for r in records if not r.fully_measured}
    if number in stopped:
        why = {Stage.SAMPLE: "its Sr is an estimate", Stage.TASKS: "it has no perplexity"}[
            stopped[number]
        ]
        raise ExportError(
            f"trial {number} of {study.study_name!r} {Stage(stopped[number]).stopped} ({why}, and "
            "the study's front dominated it): export a trial that had its full evaluation"
        )
    complete = [r for r in records if r.fully_measured]
    if not complete:
        raise ExportError(f"study {study.study_name!r} has no complete trial to export")
    if number is None:
        feasible = [r for r in complete if r.feasible]
        if not feasible:
            raise ExportError(
                f"no complete trial of {study.study_name!r} meets the study's constraints; "
                "choose one with --trial"
            )
        return max(feasible, key=lambda r: (r.measurement.srcr, r.measurement.tcr))
    for r in complete:
        if r.number == number:
            return r
    numbers = ", ".join(str(r.number) for r in complete[:20])
    raise ExportError(
        f"trial {number} is not a complete trial of {study.study_name!r}; "
        f"complete trials: {numbers}"
    )


def export_folder(out: Path) -> OwnedFolder:
    """``out`` as a folder that an export owns: ``MANIFEST`` lists the files it wrote there."""
    return OwnedFolder(out, MANIFEST, "export", ExportError)


def check_output_folder(out: Path) -> None:
    """Refuse a folder that holds anything but an earlier export's files, or that is a link."""
    export_folder(out).check()


def write_bundle(
    out: Path, runner: TrialRunner, grids: dict[str, QuantGrid], bundle: Bundle
) -> list[Path]:
    """Write ``bundle`` into ``out``, with the runner's model as compressed (``grids`` from that
    compression); returns the files written, the manifest last."""
    record = {"source": bundle.source.to_dict(), "config_key": bundle.config.canonical().key()}
    return export_folder(out).write(lambda into: _fill(into, runner, grids, bundle), record)


def _fill(out: Path, runner: TrialRunner, grids: dict[str, QuantGrid], bundle: Bundle) -> None:
    config, source = bundle.config, bundle.source
    loaded = runner.loaded
    write_checkpoint(loaded.model, loaded.tokenizer, config, grids, out, loaded.storage_dtype)
    origin = source.study if source.trial is None else f"trial {source.trial} of {source.study}"
    header = (
        f"{config.canonical().key()}: {origin}\n"
        f"Reproduce it with: sweep compress {TRIAL_SPEC} --out <folder>"
    )
    name = source.study if source.trial is None else f"{source.study}-trial-{source.trial}"
    one = trial_spec(bundle.spec, config, name, bundle.fingerprints)
    if bundle.deployment is not None and not bundle.deployment.deployable:
        # written with --force: a spec targeting the runtime that refuses it would not load
        header += f"\nExported with --force: {bundle.spec.deploy.runtime} refuses it"
        one = one.model_copy(update={"deploy": DeploySpec(), "objectives": ["srcr", "tcr"]})
    write_trial_spec(one, out / TRIAL_SPEC, header)
    (out / RECIPE).write_text(recipe_yaml(config, grid_widths(grids)))
    checkpoint_bytes = (out / WEIGHTS_FILE).stat().st_size
    record = {
        "source": source.to_dict(),
        "config": config.canonical().to_dict(),
        "config_key": config.canonical().key(),
        "measured": bundle.measurement.to_dict(),
        "base_reference": bundle.base.to_dict(),
        "fingerprints": bundle.fingerprints.model_dump(),
        "checkpoint_bytes": checkpoint_bytes,
    }
    (out / MEASUREMENTS).write_text(json.dumps(record, indent=2) + "\n")
    card = model_card(bundle, recipe_limits(config), checkpoint_bytes)
    (out / "README.md").write_text(card)
