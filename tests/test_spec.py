import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweep.spec import SPEC_MAX_BYTES, SpecError, load_spec, parse_spec, with_overrides

from .conftest import REPO
from .helpers import env

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
    for bad in (1.5, 1.0, 0, -3, True, [], [200, 100], [100, 0.5], [100, 100], [0.1, 1.2]):
        msg = _error(evaluation={"tasks": ["t"], "stages": {"sample": bad}})
        assert "evaluation.stages.sample" in msg and "(0.2), a whole number" in msg
        assert "list of increasing sizes" in msg
    assert (
        _spec(evaluation={"tasks": ["t"], "stages": {"sample": [200]}}).evaluation.stages.sample
        == 200
    )
    racing = _spec(evaluation={"tasks": ["t"], "stages": {"sample": [100, 200, 400]}})
    assert racing.evaluation.stages.sample == [100, 200, 400]
    for good in (200, 0.25):
        stages = _spec(evaluation={"tasks": ["t"], "stages": {"sample": good}}).evaluation.stages
        assert stages.sample == good and type(stages.sample) is type(good)
    for paper in ("demo-paper", "smollm2-paper"):  # a paper table needs every point in full
        assert load_spec(REPO / f"studies/{paper}.yaml").evaluation.stages.mode == "off"


@pytest.mark.parametrize("path", sorted((REPO / "studies").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_study_loads_and_is_named_after_its_file(path):
    spec = load_spec(path)
    assert spec.name == path.stem
    assert spec.trials > 0 and spec.objectives


def _bomb(levels: int = 9) -> str:
    """A "billion laughs": ``levels`` lists of ten aliases to the list before, under
    search.first (10**levels strings once expanded)."""
    lines = ["name: bomb", "model: org/m", "evaluation: {tasks: [x]}", "search:", "  first:"]
    lines.append("    - &l0 [a, a, a, a, a, a, a, a, a, a]")
    lines += [f"    - &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_at_once_in_bounded_memory(tmp_path: Path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_bomb())
    probe = (
        "import resource, sys, time\n"
        "from sweep.spec import SpecError, load_spec\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "start = time.perf_counter()\n"
        "try:\n"
        "    load_spec(sys.argv[1])\n"
        "except SpecError as err:\n"
        "    print(err)\n"
        "grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before\n"
        "print(f'{time.perf_counter() - start:.3f} s, {grown} KiB')\n"
    )
    # a separate process, so that a failure (gigabytes, minutes) is cut short and kept apart
    done = subprocess.run(
        [sys.executable, "-c", probe, str(bomb)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env(),
    )
    refusal, measured = done.stdout.strip().splitlines()
    assert "its YAML aliases (*name) repeat 12,345,678,990 nodes" in refusal, done.stderr
    assert "more than the 10,000 allowed" in refusal
    seconds, kib = float(measured.split()[0]), int(measured.split()[2])
    assert seconds < 2.0 and kib < 50_000, measured


def test_aliases_within_the_budget_load_and_a_loop_or_deep_nesting_is_refused(tmp_path: Path):
    small = tmp_path / "small.yaml"
    small.write_text(
        "name: s\nmodel: org/m\nevaluation: {tasks: [x]}\n"
        "search: {bits: [4, 16]}\nconstraints: {tcr: &band {min: 0.5}, real_ratio: *band}\n"
    )
    assert load_spec(small).constraints.real_ratio.min == 0.5
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_bomb(levels=2))  # aliases repeat 1,233 nodes: read, then refused as a spec
    with pytest.raises(SpecError, match="search.first.0: Input should be a valid dictionary"):
        load_spec(bomb)
    bomb.write_text(_bomb(levels=3))
    with pytest.raises(SpecError, match="repeat 12,330 nodes, more than the 10,000 allowed"):
        load_spec(bomb)
    loop = tmp_path / "loop.yaml"
    loop.write_text("name: &n [a, *n]\n")
    with pytest.raises(SpecError, match="not valid YAML: an alias refers to a node that holds it"):
        load_spec(loop)
    deep = tmp_path / "deep.yaml"
    deep.write_text("name: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(SpecError, match="nests its YAML too deeply"):
        load_spec(deep)


def test_a_spec_file_over_a_mebibyte_is_refused_unread(tmp_path: Path):
    big = tmp_path / "big.yaml"
    big.write_text("name: big\n#" + "x" * SPEC_MAX_BYTES + "\n")
    with pytest.raises(SpecError, match=r"big.yaml is over 1 MiB, the most it may be"):
        load_spec(big)


def test_yaml_errors_name_the_place_without_quoting_the_line(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    url = "postgresql+psycopg2://alice@127.0.0.1:1/db?password=S3cretPW"
    bad.write_text(f"name: x\nstorage: {url}: [\n")  # PyYAML quotes the end of this line
    with pytest.raises(SpecError) as info:
        load_spec(bad)
    message = str(info.value)
    assert "not valid YAML: mapping values are not allowed here at line 2, column 70" in message
    assert "S3cretPW" not in message and "\n" not in message
    bad.write_text(f"name: x\nstorage: '{url}\n")
    with pytest.raises(SpecError, match="while scanning a quoted scalar: found unexpected end"):
        load_spec(bad)


def test_a_value_that_quotes_a_url_is_shown_with_its_secrets_masked():
    url = "postgresql+psycopg2://alice:S3cretPW@127.0.0.1:1/db?password=S3cretPW"
    message = _error(storage=[url])
    assert "storage: Input should be a valid string" in message
    assert "postgresql+psycopg2://alice:***@127.0.0.1:1/db?password=***" in message
    assert "S3cretPW" not in message


def test_kl_tokens_must_fill_one_sequence():
    msg = _error(evaluation={"tasks": ["t"], "stages": {"kl_tokens": 31, "kl_seq_len": 128}})
    assert "evaluation.stages: kl_tokens (31) must be at least kl_seq_len (128)" in msg
    msg = _error(evaluation={"tasks": ["t"], "stages": {"kl_tokens": 100}})  # default 256
    assert "kl_tokens (100) must be at least kl_seq_len (256)" in msg
    stages = _spec(evaluation={"tasks": ["t"], "stages": {"kl_tokens": 128, "kl_seq_len": 128}})
    assert stages.evaluation.stages.kl_tokens == 128


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"search": {"owl_ms": [float("nan")]}}, "search.owl_ms.0"),
        ({"search": {"owl_ms": [5.0, float("inf")]}}, "search.owl_ms.1"),
        ({"search": {"owl_lambdas": [float("nan")]}}, "search.owl_lambdas.0"),
        ({"search": {"sparsity": {"values": [float("nan")]}}}, "search.sparsity.values.0"),
        ({"search": {"first": [{"sparsity": float("nan")}]}}, "search.first.0.sparsity"),
        ({"constraints": {"sr": {"max": float("inf")}}}, "constraints.sr.max"),
        ({"evaluation": {"tasks": ["t"], "stages": {"z": float("inf")}}}, "evaluation.stages.z"),
    ],
)
def test_nan_and_inf_are_refused_in_every_float_field(changes, field):
    msg = _error(**changes)
    assert f"{field}: Input should be a finite number" in msg or (
        f"{field}.float: Input should be a finite number" in msg
    ), msg


def test_a_sparsity_step_finer_than_sparsities_are_kept_is_refused():
    msg = _error(search={"sparsity": {"low": 0.0, "high": 0.5, "step": 1e-7}})
    assert "search.sparsity.step: step 1e-07 is finer than sparsities are kept" in msg
    assert "at least 1e-06" in msg


def test_a_sparsity_grid_reaching_one_is_refused():
    msg = _error(search={"sparsity": {"low": 0.0, "high": 0.9, "step": 0.6}})  # 0, 0.6, 1.2
    assert "search.sparsity: the largest sparsity, 1.2 at 6 decimals, must be below 1" in msg
    msg = _error(search={"sparsity": {"values": [0.5, 0.9999999]}})  # 1.0 at 6 decimals
    assert "the largest sparsity, 1 at 6 decimals, must be below 1" in msg


def test_a_space_past_max_configurations_is_refused_with_its_size_without_listing_it():
    fine = {"low": 0.0, "high": 0.5, "step": 1e-6}  # 500,001 sparsities
    start = time.perf_counter()
    msg = _error(search={"sparsity": fine, "bits": [4, 16]})
    assert time.perf_counter() - start < 1.0
    assert "search: the space holds 1,000,002 configurations, more than max_configurations" in msg
    assert "(100,000)" in msg and "raise max_configurations" in msg
    space = _spec(search={"sparsity": fine, "bits": [4, 16], "max_configurations": 2_000_000})
    assert space.search.size() == 1_000_002


def test_a_mixed_allocation_without_bits_it_can_average_is_refused():
    msg = _error(search={"allocations": ["mixed"], "bits": [16]})
    assert "search: allocations ['mixed'] with bits [16] give no configuration" in msg
    assert "add one of [3, 4] to bits, or uniform to allocations" in msg
    mixed = {"allocations": ["mixed"], "bits": [4], "sparsity": {"values": [0.0, 0.5]}}
    assert _spec(search=mixed).search.size() == 2


def test_a_long_value_is_cut_after_its_secrets_are_masked():
    url = "x://alice:S3cretPW@127.0.0.1:1/db"
    message = _error(storage=[" " * 187 + url])  # the cut at 200 characters falls in it
    assert "storage: Input should be a valid string (got ['  " in message
    assert message.endswith("x://alice:*...)") and "S3c" not in message
