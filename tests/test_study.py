"""What a stored study keeps of its spec: the fields that give its trials their meaning."""

from __future__ import annotations

import pytest
import yaml

from sweep.spec import parse_spec
from sweep.study import SpecChangedError, check_spec_unchanged, open_study

from .toy import toy_spec


def test_a_study_refuses_a_changed_space_but_not_a_changed_size_limit_or_first(toy_dir, tmp_path):
    data = yaml.safe_load(toy_spec(toy_dir, "kept").read_text())
    study = open_study(parse_spec(data), f"sqlite:///{tmp_path / 'kept.db'}")
    roomier = {**data["search"], "max_configurations": 10**6, "first": [{"bits": 4}]}
    check_spec_unchanged(study, parse_spec({**data, "search": roomier}))
    narrower = {**data["search"], "bits": [4, 16]}
    with pytest.raises(SpecChangedError, match=r"search.bits: \[2, 3, 4, 8, 16\] -> \[4, 16\]"):
        check_spec_unchanged(study, parse_spec({**data, "search": narrower}))
