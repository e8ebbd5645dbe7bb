"""Bad input: a clear error naming what is wrong, a non-zero exit, and the database as it was."""

from pathlib import Path

import pytest
import yaml

from .helpers import db_contents, sweep
from .toy import toy_spec


@pytest.fixture(scope="module")
def study_db(tmp_path_factory, toy_dir):
    """A study with one complete trial, that every bad run below must leave as it is."""
    tmp = tmp_path_factory.mktemp("bad")
    spec = toy_spec(toy_dir, "bad")
    url = f"sqlite:///{tmp / 'bad.db'}"
    first = sweep("run", str(spec), "--trials", "1", "--storage", url, cwd=tmp)
    assert first.returncode == 0, first.stdout + first.stderr
    return tmp, spec, url


def _variant(tmp: Path, spec: Path, name: str, change) -> Path:
    data = yaml.safe_load(spec.read_text())
    change(data)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def change(data):
        node = data
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value

    return change


CASES = {
    "missing model path": (_set("model", "./no/such/model"), ["model folder", "does not exist"]),
    "unknown task": (
        _set("evaluation", "tasks", ["toy_recal"]),
        ["unknown lm-eval task 'toy_recal'", "toy_recall"],
    ),
    "sparsity outside [0, 1)": (
        _set("search", "sparsity", {"values": [0.5, 1.0]}),
        ["search.sparsity.values", "less than 1"],
    ),
    "unsupported bit-width": (_set("search", "bits", [4, 6]), ["search.bits", "6", "allowed"]),
    "invalid N:M pattern": (
        _set("search", "patterns", ["4:2"]),
        ["search.patterns", "0 < N < M", "'4:2'"],
    ),
    "unknown sampler": (
        _set("sampler", {"name": "nsga3", "seed": 0}),
        ["sampler.name", "Did you mean 'nsga2'"],
    ),
    "changed search space": (
        _set("search", "bits", [2, 4, 16]),
        [
            "was created with another spec",
            "search.bits: [2, 3, 4, 8, 16] -> [2, 4, 16]",
            "--study-name",
        ],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_spec_field(study_db, case):
    tmp, spec, url = study_db
    change, expected = CASES[case]
    before = db_contents(url)
    bad = _variant(tmp, spec, case.replace(" ", "_").replace(":", ""), change)
    # a fresh study name, so that each error is the case's own and not "the spec changed"
    name = [] if case == "changed search space" else ["--study-name", "fresh"]
    result = sweep("run", str(bad), "--storage", url, *name, cwd=tmp)
    assert result.returncode == 2, result.stdout + result.stderr
    for text in expected:
        assert text in result.stderr, f"{text!r} not in: {result.stderr}"
    assert db_contents(url) == before


def test_malformed_yaml(study_db):
    tmp, _, url = study_db
    before = db_contents(url)
    bad = tmp / "malformed.yaml"
    bad.write_text("name: bad\nsearch: {bits: [2, 4\n")
    result = sweep("run", str(bad), "--storage", url, cwd=tmp)
    assert result.returncode == 2
    assert "not valid YAML" in result.stderr
    assert db_contents(url) == before


def test_empty_calibration_file(study_db):
    tmp, spec, url = study_db
    before = db_contents(url)
    empty = tmp / "empty.txt"
    empty.write_text("\n\n")

    def change(data):
        data["calibration"] = {"source": "file", "path": str(empty), "samples": 4, "seq_len": 32}
        data["search"]["prune_methods"] = ["sparsegpt"]

    bad = _variant(tmp, spec, "empty_cal", change)
    result = sweep("run", str(bad), "--storage", url, "--study-name", "other", cwd=tmp)
    assert result.returncode == 2
    assert "calibration file" in result.stderr and "is empty" in result.stderr
    assert db_contents(url) == before


def test_unreachable_database(study_db):
    tmp, spec, _ = study_db
    url = "postgresql+psycopg2://nobody:pw@127.0.0.1:1/none"
    result = sweep("run", str(spec), "--storage", url, cwd=tmp)
    assert result.returncode == 2
    assert "cannot open study storage" in result.stderr and "127.0.0.1" in result.stderr


def test_read_only_database_file(study_db):
    tmp, spec, url = study_db
    path = Path(url.removeprefix("sqlite:///"))
    before = db_contents(url)
    mode = path.stat().st_mode
    path.chmod(0o444)
    try:
        result = sweep("run", str(spec), "--storage", url, cwd=tmp)
    finally:
        path.chmod(mode)
    assert result.returncode == 2
    assert "read-only" in result.stderr
    assert db_contents(url) == before


def test_missing_spec_file(tmp_path):
    result = sweep("run", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_worker_for_a_missing_database_or_study(study_db):
    tmp, _, url = study_db
    missing = tmp / "elsewhere.db"
    result = sweep("worker", "--storage", f"sqlite:///{missing}", "--study", "bad", cwd=tmp)
    assert result.returncode == 2
    assert "no study database at" in result.stderr and str(missing) in result.stderr
    assert not missing.exists()

    before = db_contents(url)
    result = sweep("worker", "--storage", url, "--study", "bda", cwd=tmp)
    assert result.returncode == 2
    assert "no study 'bda'" in result.stderr and "'bad'" in result.stderr
    assert db_contents(url) == before
