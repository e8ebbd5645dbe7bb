"""A trial's configuration as a study-spec fragment: the study's spec with a search space that
holds exactly that configuration. `sweep compress` reads it back; `sweep run` on it would run
just that configuration."""

from __future__ import annotations

from pathlib import Path

import yaml

from sweep.compress import CompressionConfig
from sweep.compress.variables import VARIABLES
from sweep.space import all_configs
from sweep.spec import (
    Constraints,
    Fingerprints,
    SamplerSpec,
    SearchSpace,
    SparsityRange,
    SpecError,
    StudySpec,
)


def single_config_space(config: CompressionConfig) -> SearchSpace:
    """The search space whose only configuration is ``config`` (canonical)."""
    c = config.canonical()
    lists = {v.spec_list: [getattr(c, v.name)] for v in VARIABLES if v.spec_list != "sparsity"}
    return SearchSpace(sparsity=SparsityRange(values=[c.sparsity]), **lists)


def trial_spec(
    spec: StudySpec, config: CompressionConfig, name: str, fingerprints: Fingerprints | None = None
) -> StudySpec:
    """``spec`` narrowed to ``config``: same model, data and tasks; one configuration, one trial.
    With ``fingerprints``, the inputs it was measured on (``sweep compress`` refuses others)."""
    return spec.model_copy(
        update={
            "name": name,
            "fingerprints": spec.fingerprints if fingerprints is None else fingerprints,
            "search": single_config_space(config),
            "sampler": SamplerSpec(name="grid", seed=0),
            "constraints": Constraints(),
            "trials": 1,
            "storage": None,
        }
    )


def write_trial_spec(spec: StudySpec, path: Path, header: str) -> Path:
    """Write ``spec`` as YAML, headed by ``header`` as comments."""
    comments = "".join(f"# {line}\n" for line in header.splitlines())
    body = yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True), sort_keys=False)
    path.write_text(comments + body)
    return path


def the_config(spec: StudySpec) -> CompressionConfig:
    """The one configuration of a spec's search space; an error if it holds more or fewer."""
    configs = all_configs(spec.search)
    if len(configs) != 1:
        shown = ", ".join(sorted(c.key() for c in configs)[:5])
        raise SpecError(
            f"`sweep compress` takes a spec whose search space holds exactly one configuration "
            f"(as `sweep export` writes); {spec.name!r} holds {len(configs)}: {shown}"
            + (" ..." if len(configs) > 5 else "")
        )
    return next(iter(configs))
