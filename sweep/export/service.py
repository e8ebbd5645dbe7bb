"""`sweep export` and `sweep compress` as requests: recompress one configuration with the study's
own model and calibration, and write the folder (see ``sweep.export.bundle``)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from sweep.compress import CompressionConfig
from sweep.deployment import Layout, Verdict, assess, judged, layer_widths
from sweep.events import Events
from sweep.export import ExportError
from sweep.export.bundle import check_output_folder, choose_trial, write_bundle
from sweep.export.contents import Bundle, Source
from sweep.export.fragment import the_config, trial_spec
from sweep.identity import check_spec_inputs
from sweep.space import check_group_sizes, unfit_layers
from sweep.spec import RUNS, DeploySpec, calibration_source, load_spec
from sweep.study import (
    StudyAddress,
    check_fingerprints,
    pinned_fingerprints,
    stored_base,
    stored_spec,
)
from sweep.trial import TrialResult
from sweep.workers import prepare_runner


@dataclass(frozen=True)
class ExportRequest:
    """Which trial of which study to export, and where to."""

    study: StudyAddress
    trial: int | None = None  # default: the best SrCr among the trials meeting the constraints
    out: Path | None = None  # default: runs/<study>-trial-<n>
    progress: bool = True
    force: bool = False  # write a checkpoint the study's deploy runtime would refuse


@dataclass(frozen=True)
class Exported:
    folder: Path
    files: list[Path]
    trial: int


def export_trial(request: ExportRequest, events: Events) -> Exported:
    """Recompress the chosen trial's configuration and write its folder. The study's stored
    spec is used (whatever the spec file says now), narrowed to that configuration, so that
    calibration data is read only if it needs some. What would make the export fail (weights
    other than the study's, a group size the format cannot store) is checked before the
    recompression."""
    study = request.study.open()
    chosen = choose_trial(study, request.trial)
    folder = request.out or RUNS / f"{study.study_name}-trial-{chosen.number}"
    check_output_folder(folder)
    ran, base = stored_spec(study), stored_base(study)
    config, measurement = chosen.config, chosen.measurement
    if config is None or measurement is None or base is None:
        raise ExportError(f"trial {chosen.number} of {study.study_name!r} holds no measurement")
    events.note(f"exporting trial {chosen.number} of {study.study_name}: {config.key()}")
    pinned = pinned_fingerprints(study)
    one = trial_spec(ran, config, ran.name, pinned)
    with prepare_runner(one, events, request.progress, evaluate=False) as runner:
        where = calibration_source(ran.calibration)
        check_fingerprints(study, runner.fingerprints, ran.model, where, record=False)
        unfit = unfit_layers(config.group_size if config.quantizes else None,
                             runner.loaded.input_widths())  # fmt: skip
        if unfit:
            name, width = next(iter(unfit.items()))
            raise ExportError(
                f"trial {chosen.number} ({config.key()}) cannot be exported: its group size "
                f"{config.group_size} does not divide the input width of {len(unfit)} layers "
                f"({name.removesuffix('.weight')}: {width}), and compressed-tensors stores a "
                "grouped layer only when its groups tile the row"
            )
        what = f"trial {chosen.number} of {study.study_name!r} ({config.key()})"
        layout = runner.loaded.layout()
        check_deployable(config, measurement.layers, layout, ran.deploy, what, request.force)
        compressed = runner.compress(config, record_grids=True)
        check_same_plan(measurement.layers, compressed.plan(), what)
        served = check_deployable(config, compressed.plan(), layout, ran.deploy, what,
                                  request.force)  # fmt: skip
        source = Source(ran.name, chosen.number, ran.model)
        known = pinned.known(runner.fingerprints)
        measurement = judged(measurement, config, layout, ran.deploy)
        bundle = Bundle(ran, config, measurement, base, source, known, served)
        with events.busy(f"writing {folder}"):
            files = write_bundle(folder, runner, compressed.grids, bundle)
    return Exported(folder, files, chosen.number)


@dataclass(frozen=True)
class CompressRequest:
    """A spec holding one configuration (as `sweep export` writes), and where to write the
    checkpoint, if anywhere."""

    spec_path: Path
    out: Path | None = None
    progress: bool = True
    force: bool = False  # write a checkpoint the spec's deploy runtime would refuse


@dataclass(frozen=True)
class Compressed:
    result: TrialResult
    files: list[Path]


def compress_spec(request: CompressRequest, events: Events) -> Compressed:
    """Compress the model by the spec's one configuration, evaluate it and the base model (for
    Sr), and write the folder when ``request.out`` is set."""
    spec = load_spec(request.spec_path)
    config = the_config(spec)
    if request.out is not None:
        check_output_folder(request.out)
    with prepare_runner(spec, events, request.progress) as runner:
        check_spec_inputs(spec, runner.fingerprints, f"{request.spec_path} was")
        check_group_sizes(spec.search, runner.loaded.input_widths())
        with events.busy("evaluating the base model"):
            base = runner.evaluate_base()
        layout = runner.loaded.layout()
        what = f"{request.spec_path}'s configuration ({config.key()})"
        if request.out is not None:
            check_deployable(config, None, layout, spec.deploy, what, request.force)
        result = runner.run(config, base, record_grids=request.out is not None)
        result = replace(result, measurement=judged(result.measurement, config, layout,
                                                    spec.deploy))  # fmt: skip
        files: list[Path] = []
        if request.out is not None:
            plan = result.measurement.layers
            served = check_deployable(config, plan, layout, spec.deploy, what, request.force)
            source = Source(spec.name, None, spec.model)
            known = spec.fingerprints.known(runner.fingerprints)
            bundle = Bundle(spec, config, result.measurement, base, source, known, served)
            with events.busy(f"writing {request.out}"):
                files = write_bundle(request.out, runner, result.grids, bundle)
    return Compressed(result, files)


def check_deployable(
    config: CompressionConfig,
    plan: dict[str, list[float]] | None,
    layout: Layout,
    target: DeploySpec,
    what: str,
    force: bool,
) -> Verdict | None:
    """The deploy runtime's verdict on ``config`` compressed by ``plan`` (module -> [sparsity,
    bits]; None: uniform); an ExportError naming the layers when the runtime would refuse it,
    unless ``force``. None without a runtime."""
    if not target.active:
        return None
    verdict = assess(config, layer_widths(config, plan, layout), layout, target)
    if not verdict.deployable and not force:
        gpu = f" on compute capability {target.gpu}" if target.gpu else ""
        raise ExportError(
            f"{what} cannot be served by {target.runtime}{gpu}: {verdict.reason}. Export it "
            "anyway with --force (the model card then says so), or choose a deployable trial"
        )
    return verdict


def check_same_plan(
    measured: dict[str, list[float]] | None, now: dict[str, list[float]], what: str
) -> None:
    """Refuse to export a non-uniform trial whose layers would now get other widths than those
    it was measured with (a mixed plan measured before widths were given per fused group)."""
    if not measured:
        return
    moved = [n for n, (_, bits) in measured.items() if n in now and now[n][1] != bits]
    if moved:
        raise ExportError(
            f"{what} was measured with other widths than its configuration now gives "
            f"{len(moved)} layers ({moved[0]}: {int(measured[moved[0]][1])} bits then, "
            f"{int(now[moved[0]][1])} now; mixed widths are now one per fused group): run the "
            "configuration again in a new study (--study-name) and export that trial"
        )
