"""The Optuna study in its storage: opening it, the spec and base reference it keeps, its target.

Several workers (processes, on one machine or many) run the same study through its storage;
``sweep.run_loop`` runs their trials, ``sweep.plan`` chooses them.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from sweep.errors import UserError
from sweep.evaluation.measurement import BaseReference
from sweep.evaluation.sample import draw_samples
from sweep.identity import InputsChangedError, changes
from sweep.metrics import METRICS
from sweep.spec import (
    Fingerprints,
    SpecError,
    StudySpec,
    load_spec,
    parse_spec,
    with_overrides,
)
from sweep.storage import (
    StorageError,
    check_url,
    display,
    make_storage,
    require_database,
    sqlite_path,
)

_BASE_ATTR = "base_reference"
_SPEC_ATTR = "spec"
_RUN_ATTR = "current_run"
# the parts of a spec that a stored study must keep: they define its trials' meaning (and which
# of them are feasible)
PINNED_FIELDS = (
    "model", "dtype", "calibration", "evaluation", "search", "objectives", "constraints",
    "deploy",
)  # fmt: skip
# what draws a study's samples, once, with its base (``sweep.trial``): a new value that draws the
# same samples on the study's tasks (a new default whose steps end past them) changes nothing
_SAMPLE_FIELDS = ("sample", "min_docs", "seed")


class SpecChangedError(UserError, ValueError):
    """A study is re-run with a spec that changes what its stored trials mean."""


class ModelChangedError(InputsChangedError):
    """The model's weights are not those the study's trials were measured on."""


class TasksChangedError(InputsChangedError):
    """The tasks' documents are not those the study's trials were scored on."""


def load_existing_study(url: str, name: str, heartbeat: bool = False) -> optuna.Study:
    """A study that must already exist; a clear error when its storage or the study is missing.
    With ``heartbeat`` its trials can be run (a worker), else only read."""
    require_database(url)
    storage = make_storage(url, heartbeat=heartbeat)
    names = sorted(s.study_name for s in storage.get_all_studies())
    if name not in names:
        raise StorageError(f"no study {name!r} in {display(url)}; it has: {names}")
    return optuna.load_study(study_name=name, storage=storage)


def _pinned(spec: StudySpec) -> dict[str, Any]:
    data = spec.model_dump(mode="json")
    # what runs first, and how large a space may be, change no trial's meaning
    data["search"].pop("first", None)
    data["search"].pop("max_configurations", None)
    return {k: data[k] for k in PINNED_FIELDS}


def _differences(old: Any, new: Any, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _differences(old.get(k), new.get(k), f"{path}.{k}" if path else k)
        return out
    return [] if old == new else [f"{path}: {json.dumps(old)} -> {json.dumps(new)}"]


def _draws_the_stored_samples(study: optuna.Study, spec: StudySpec) -> bool:
    """Whether ``spec`` draws, on the study's tasks, the samples its base reference holds."""
    base = stored_base(study)
    if base is None or base.samples is None or base.documents is None:
        return False
    documents = {
        task: {leaf: dict(enumerate(scores)) for leaf, scores in leaves.items()}
        for task, leaves in base.documents.items()
    }
    return draw_samples(documents, spec.evaluation.stages) == base.task_samples()


def check_spec_unchanged(study: optuna.Study, spec: StudySpec) -> None:
    if study.user_attrs.get(_SPEC_ATTR) is None:
        return
    then, now = _pinned(stored_spec(study)), _pinned(spec)
    if _draws_the_stored_samples(study, spec):
        for stages in (then["evaluation"]["stages"], now["evaluation"]["stages"]):
            for name in _SAMPLE_FIELDS:
                stages.pop(name)
    changes = _differences(then, now)
    if changes:
        lines = "\n".join(f"  {c}" for c in changes)
        raise SpecChangedError(
            f"study {study.study_name!r} was created with another spec; what changed:\n{lines}\n"
            "Restore those fields, or start a new study with --study-name NEW_NAME."
        )


def preflight(spec: StudySpec, url: str) -> None:
    """Fail early on a storage that cannot be used or a stored study with another spec.

    Writes nothing: a missing SQLite file is only checked to be creatable.
    """
    check_url(url)
    path = sqlite_path(url)
    if path is not None and not path.exists():
        parent = path.parent
        while not parent.exists():
            parent = parent.parent
        if not os.access(parent, os.W_OK):
            raise StorageError(f"cannot create study storage {url}: {parent} is not writable")
        return
    if path is not None and (not os.access(path, os.W_OK) or not path.stat().st_mode & 0o222):
        raise StorageError(f"study storage {url} is read-only (no write permission)")
    storage = make_storage(url, heartbeat=False)
    if spec.name in {s.study_name for s in storage.get_all_studies()}:
        check_spec_unchanged(optuna.load_study(study_name=spec.name, storage=storage), spec)


def open_study(spec: StudySpec, storage_url: str) -> optuna.Study:
    """Create the study, or load it if it exists: re-running continues the same study.

    A stored study keeps its spec; re-running it with a spec that changes the meaning of its
    trials (model, data, tasks, search space, objectives, constraints) is refused with the
    differences. Two processes creating the same new study at once both get it.
    """
    storage = make_storage(storage_url)
    name = spec.name
    directions = ["maximize"] * len(spec.objectives)
    try:
        study = optuna.create_study(study_name=name, storage=storage, directions=directions)
        study.set_metric_names([METRICS[o].label for o in spec.objectives])
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage)
        if len(study.directions) != len(spec.objectives):
            raise SpecChangedError(
                f"study {name!r} has {len(study.directions)} objectives, the spec "
                f"{len(spec.objectives)}; start a new study with --study-name NEW_NAME"
            ) from None
        check_spec_unchanged(study, spec)
    if study.user_attrs.get(_SPEC_ATTR) is None:
        stored = spec.model_dump(mode="json")
        if stored["storage"]:
            stored["storage"] = display(stored["storage"])  # the dashboard shows user attrs
        study.set_user_attr(_SPEC_ATTR, stored)
    return study


# where a study pins each fingerprint of its inputs (the first two names predate the others)
_PIN_ATTRS = {
    "weights": "model_weights",
    "tokenizer": "tokenizer",
    "calibration": "calibration_tokens",
    "documents": "task_documents",
    "prompts": "task_prompts",
}


def pinned_fingerprints(study: optuna.Study) -> Fingerprints:
    """The fingerprints of the inputs the study's trials were measured on, as far as known."""
    attrs = study.user_attrs
    return Fingerprints(**{name: attrs.get(attr) for name, attr in _PIN_ATTRS.items()})


def check_fingerprints(
    study: optuna.Study, now: Fingerprints, model: str, where: str, record: bool = True
) -> None:
    """Refuse inputs other than those the study's trials were measured on, naming each that
    changed (``sweep.identity``); with ``record``, the study pins those it has no fingerprint
    of yet. ``where`` names the calibration source, for the message."""
    then = pinned_fingerprints(study)
    lines = changes(then, now, model, f"study {study.study_name!r} was", where)
    if lines:
        kind = ModelChangedError if then.changed(now) == ["weights"] else InputsChangedError
        kind = TasksChangedError if then.changed(now) == ["documents"] else kind
        shown = "\n".join(f"  {line}" for line in lines)
        raise kind(
            f"study {study.study_name!r} cannot go on with these inputs; its trials would mix "
            f"two of them:\n{shown}\nRestore them, or start a new study with --study-name "
            "NEW_NAME"
        )
    if record:
        for name, attr in _PIN_ATTRS.items():
            value = getattr(now, name)
            if value is not None and getattr(then, name) is None:
                study.set_user_attr(attr, value)


def stored_spec(study: optuna.Study) -> StudySpec:
    """The spec the study was created with (whatever the spec file says now)."""
    data = study.user_attrs.get(_SPEC_ATTR)
    if data is None:
        raise StorageError(f"study {study.study_name!r} holds no sweep spec")
    try:
        return parse_spec(data, f"study {study.study_name}")
    except SpecError as err:
        raise StorageError(
            f"study {study.study_name!r} was created by another version of sweep, whose spec "
            f"this one cannot read ({err}); start a new study with --study-name NEW_NAME"
        ) from None


def stored_base(study: optuna.Study) -> BaseReference | None:
    """The base model's reference scores, once a worker has evaluated them."""
    data = study.user_attrs.get(_BASE_ATTR)
    return BaseReference.from_dict(data) if data else None


def store_base(study: optuna.Study, base: BaseReference) -> None:
    study.set_user_attr(_BASE_ATTR, base.to_dict())


@dataclass(frozen=True)
class Run:
    """One `sweep run` of a study: it computes ``budget`` new configurations (trials that reuse
    a stored result are recorded, and teach the sampler, but do not count)."""

    id: str
    budget: int

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "budget": self.budget}


def start_run(study: optuna.Study, budget: int) -> Run:
    """A new run of the study, which workers joining later take part in."""
    run = Run(uuid.uuid4().hex[:8], budget)
    study.set_user_attr(_RUN_ATTR, run.to_dict())
    return run


def current_run(study: optuna.Study) -> Run | None:
    """The study's latest run, if it has had one."""
    data = study.user_attrs.get(_RUN_ATTR)
    return None if data is None else Run(str(data["id"]), int(data["budget"]))


@dataclass(frozen=True)
class StudyAddress:
    """Where a stored study is, as the command line names it: a spec (with ``--model``, as
    ``sweep run`` was given it), or ``--storage`` and ``--study-name``, which win over the spec
    (with both, the spec file is not read)."""

    spec_path: Path
    model: str | None = None
    storage: str | None = None
    name: str | None = None

    def open(self) -> optuna.Study:
        """The stored study, for reading; a clear error when it does not exist."""
        storage, name = self.storage, self.name
        if storage is None or name is None:
            spec = with_overrides(load_spec(self.spec_path), self.model)
            storage, name = storage or spec.storage_url(), name or spec.name
        return load_existing_study(storage, name)
