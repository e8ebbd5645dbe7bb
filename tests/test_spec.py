from pathlib import Path

import pytest

from sweep.spec import SpecError, load_spec, parse_spec, with_overrides

from .conftest import REPO

MINIMAL = {"name": "t", "model": "org/model", "evaluation": {"tasks": ["demo_recall"]}}


def _spec(**changes):
    data = {**MINIMAL, **changes}
    return parse_spec(data, "test.yaml")


def _error(**changes) -> str:
    with pytest.raises(SpecError) as info:
        _spec(**changes)
    return str(info.value)


def test_shipped_specs_load():
    demo = load_spec(REPO / "studies/demo.yaml")
    assert demo.model == str(REPO / "sweep/demo/model")
    assert demo.calibration.path == REPO / "sweep/demo/data/calibration.txt"
    assert demo.evaluation.include_path == REPO / "sweep/demo/tasks"
    assert demo.search.bits == [2, 3, 4, 8, 16]
    assert set(demo.search.patterns) == {"unstructured", "2:4"}
    assert demo.search.sparsity.grid()[-1] == pytest.approx(0.7)
    paper = load_spec(REPO / "studies/paper.yaml")
    assert [t.name for t in paper.evaluation.tasks] == [
        "leaderboard_mmlu_pro",
        "leaderboard_bbh",
        "leaderboard_math_hard",
    ]


def test_unsupported_bit_width_names_field_value_and_allowed():
    msg = _error(search={"bits": [4, 5]})
    assert "search.bits" in msg and "5" in msg and "[2, 3, 4, 8, 16]" in msg


def test_sparsity_outside_unit_interval():
    msg = _error(search={"sparsity": {"low": 0.0, "high": 1.2}})
    assert "search.sparsity.high" in msg and "1.2" in msg and "less than 1" in msg


def test_invalid_nm_pattern():
    msg = _error(search={"patterns": ["unstructured", "4:2"]})
    assert "search.patterns" in msg and "0 < N < M" in msg


def test_unknown_sampler_suggests_near_name():
    msg = _error(sampler={"name": "tpee"})
    assert "sampler.name" in msg and "Did you mean 'tpe'" in msg and "nsga2" in msg


def test_unknown_method_suggests_near_name():
    msg = _error(search={"prune_methods": ["magnitde"]})
    assert "search.prune_methods" in msg and "Did you mean 'magnitude'" in msg


def test_unknown_field_is_named():
    msg = _error(serach={})
    assert "serach: unknown field" in msg


def test_missing_required_field():
    with pytest.raises(SpecError, match="evaluation: Field required"):
        parse_spec({"name": "t", "model": "m"}, "x.yaml")


def test_file_calibration_needs_a_path():
    msg = _error(calibration={"source": "file"})
    assert "calibration" in msg and "needs a path" in msg


def test_empty_task_list():
    msg = _error(evaluation={"tasks": []})
    assert "evaluation.tasks" in msg and "at least one" in msg


def test_malformed_yaml(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsearch: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)


def test_missing_spec_file(tmp_path: Path):
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "nope.yaml")


def test_relative_paths_are_taken_from_the_specs_folder(tmp_path: Path):
    (tmp_path / "cal.txt").write_text("hello\n")
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(
        "name: s\nmodel: m\nevaluation: {tasks: [a], include_path: tasks}\n"
        "calibration: {source: file, path: cal.txt}\n"
    )
    spec = load_spec(spec_file)
    assert spec.calibration.path == (tmp_path / "cal.txt").resolve()
    assert spec.evaluation.include_path == (tmp_path / "tasks").resolve()


def test_default_storage_is_sqlite_under_runs():
    assert _spec().storage_url() == "sqlite:///runs/t.db"


def test_a_local_model_and_a_sqlite_file_are_taken_from_the_specs_folder(tmp_path: Path):
    (tmp_path / "models" / "m").mkdir(parents=True)
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(
        "name: s\nmodel: models/m\nevaluation: {tasks: [a]}\nstorage: sqlite:///out/s.db\n"
    )
    spec = load_spec(spec_file)
    assert spec.model == str(tmp_path / "models" / "m")
    assert spec.storage == f"sqlite:///{tmp_path / 'out' / 's.db'}"
    hub = parse_spec({**MINIMAL, "model": "org/model"}, "x.yaml")
    assert hub.model == "org/model"


def test_a_model_given_on_the_command_line_names_the_study_after_it(tmp_path: Path, monkeypatch):
    spec = _spec()
    assert with_overrides(spec, model="meta-llama/Llama-3.1-8B").name == "t-meta-llama-Llama-3.1-8B"
    (tmp_path / "my model").mkdir()
    monkeypatch.chdir(tmp_path)
    local = with_overrides(spec, model="./my model")
    assert local.model == str(tmp_path / "my model") and local.name == "t-my-model"
    assert with_overrides(spec, model="org/model") == spec  # the spec's own model
    assert with_overrides(spec, model="x/y", name="mine").name == "mine"


def test_a_study_name_from_the_command_line_follows_the_specs_rules():
    for bad in ("../x", "a/b", ".hidden", ""):
        if not bad:
            continue
        with pytest.raises(SpecError, match="--study-name"):
            with_overrides(_spec(), name=bad)


def test_stages_read_yaml_booleans_and_name_what_is_allowed():
    import yaml

    for text, mode in (("off", "off"), ("on", "on"), ("auto", "auto")):
        data = yaml.safe_load(f"mode: {text}")  # YAML reads on/off as booleans
        spec = _spec(evaluation={"tasks": ["t"], "stages": data})
        assert spec.evaluation.stages.mode == mode
    msg = _error(evaluation={"tasks": ["t"], "stages": {"mode": "sometimes"}})
    assert "evaluation.stages.mode" in msg and "'auto', 'on' or 'off'" in msg
    msg = _error(evaluation={"tasks": ["t"], "stages": {"sample": 1.5}})
    assert "evaluation.stages.sample" in msg and "less than 1" in msg
    for paper in ("demo-paper", "smollm2-paper"):  # a paper table needs every point in full
        assert load_spec(REPO / f"studies/{paper}.yaml").evaluation.stages.mode == "off"


@pytest.mark.parametrize("path", sorted((REPO / "studies").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_study_loads_and_is_named_after_its_file(path):
    spec = load_spec(path)
    assert spec.name == path.stem
    assert spec.trials > 0 and spec.objectives
