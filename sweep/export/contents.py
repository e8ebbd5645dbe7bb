"""What an export folder describes: the configuration, the spec it ran in, what it measured,
the base model's scores, where it comes from, and the runtime's verdict. The bundle writes it
(``sweep.export.bundle``) and the model card reads it (``sweep.export.card``)."""

from __future__ import annotations

from dataclasses import dataclass

from sweep.compress import CompressionConfig
from sweep.deployment import Verdict
from sweep.evaluation.measurement import BaseReference, Measurement
from sweep.spec import Fingerprints, StudySpec


@dataclass(frozen=True)
class Source:
    """Where an exported configuration comes from."""

    study: str
    trial: int | None  # None: `sweep compress` on a spec
    model: str

    def to_dict(self) -> dict[str, object]:
        return {"study": self.study, "trial": self.trial, "model": self.model}


@dataclass(frozen=True)
class Bundle:
    """What an export folder describes: the configuration, the spec it ran in, what it
    measured, the base model's scores, and where it comes from."""

    spec: StudySpec
    config: CompressionConfig
    measurement: Measurement
    base: BaseReference
    source: Source
    fingerprints: Fingerprints  # the inputs it was measured on (sweep.identity)
    # the spec's deploy runtime's verdict on what was written (None: no runtime)
    deployment: Verdict | None = None
