"""Bad input, as a careless or hostile user gives it: each row runs one command of the real CLI
(in this process, through typer's runner) and must end with exit code 2, a message that names
what is wrong, no traceback, the study's database exactly as it was, and no sign of the secret
planted in the spec's storage URL (or in the row's own input)."""

from __future__ import annotations

import datetime
import json
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState
from typer.testing import CliRunner

from sweep.cli import app
from sweep.compress import CompressionConfig
from sweep.evaluation.measurement import Measurement
from sweep.record import TrialRecord

from .helpers import db_contents, sweep
from .toy import toy_spec

SECRET = "S3cretPW"  # planted in every spec the rows read; no output may show it
PLANTED = f"postgresql+psycopg2://alice:{SECRET}@127.0.0.1:1/sweep?password={SECRET}"
QUERY = "postgresql+psycopg2://alice@127.0.0.1:1/sweep?password="
REFUSED = f"cannot open study storage {QUERY}***: (psycopg2.OperationalError)"


@dataclass
class World:
    """What the rows run against: a study with one complete trial, its spec, and broken
    models, files and folders to point it at."""

    tmp: Path
    spec: Path
    url: str
    toy: Path
    paths: dict[str, Path] = field(default_factory=dict)

    def variant(self, name: str, change: Callable[[dict], None]) -> Path:
        data = yaml.safe_load(self.spec.read_text())
        change(data)
        path = self.tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        return path


def _broken_models(toy: Path, tmp: Path) -> dict[str, Path]:
    from transformers import T5Config, T5ForConditionalGeneration

    model = toy / "model"
    out = {}
    garbled = tmp / "garbled"
    shutil.copytree(model, garbled)
    weights = garbled / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    out["garbled"] = garbled

    t5 = tmp / "t5"
    config = T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2)
    T5ForConditionalGeneration(config).save_pretrained(t5)
    for f in model.glob("tokenizer*"):
        shutil.copy(f, t5)
    out["t5"] = t5

    remote = tmp / "remote"
    shutil.copytree(model, remote)
    config_file = remote / "config.json"
    data = json.loads(config_file.read_text())
    data["model_type"] = "sweep-custom"  # a kind transformers has no code of its own for
    data["auto_map"] = {"AutoConfig": "custom.CustomConfig",
                        "AutoModelForCausalLM": "custom.CustomModel"}  # fmt: skip
    config_file.write_text(json.dumps(data))
    (remote / "custom.py").write_text("raise SystemExit('this code must never run')\n")
    out["remote"] = remote

    pickled = tmp / "pickled"
    shutil.copytree(model, pickled)
    (pickled / "model.safetensors").unlink()
    torch.save({"when": datetime.datetime(2026, 1, 1)}, pickled / "pytorch_model.bin")
    out["pickled"] = pickled

    empty = tmp / "empty-model"
    empty.mkdir()
    out["empty"] = empty
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory, toy_dir) -> World:
    tmp = tmp_path_factory.mktemp("bad")
    spec = toy_spec(toy_dir, "bad")
    planted = yaml.safe_load(spec.read_text())
    planted["storage"] = PLANTED  # never opened: every row names its storage
    spec.write_text(yaml.safe_dump(planted))
    url = f"sqlite:///{tmp / 'bad.db'}"
    first = sweep("run", str(spec), "--trials", "1", "--storage", url, cwd=tmp)
    assert first.returncode == 0, first.stdout + first.stderr
    w = World(tmp, spec, url, toy_dir, _broken_models(toy_dir, tmp))
    (tmp / "empty.txt").write_text("\n\n")
    busy = tmp / "busy"
    busy.mkdir()
    (busy / "trials.csv").write_text("mine\n")
    w.paths["busy"] = busy
    _owned_folders(w)
    return w


# files of the user's that no row may change: (content, mode)
UNTOUCHABLE = {"busy/trials.csv": ("mine\n", 0o644), "exported/id_rsa": ("KEY", 0o600),
               "outside.md": ("the user's", 0o600)}  # fmt: skip


def _owned_folders(w: World) -> None:
    """Folders an earlier export or report wrote, with something of the user's planted in them:
    a private key, a link out of the folder, a truncated manifest; and a dangling link."""
    for name, (text, mode) in UNTOUCHABLE.items():
        path = w.tmp / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
    listed = json.dumps({"files": ["README.md", "sweep-trial.yaml"]})
    for name in ("exported", "linked"):
        folder = w.tmp / name
        folder.mkdir(exist_ok=True)
        (folder / "sweep-export.json").write_text(listed)
        (folder / "sweep-trial.yaml").write_text("name: old\n")
        w.paths[name] = folder
    (w.tmp / "exported" / "README.md").write_text("an old card")
    (w.tmp / "linked" / "README.md").symlink_to(w.tmp / "outside.md")
    truncated = w.tmp / "old-report"
    truncated.mkdir()
    (truncated / "sweep-report.json").write_text('{"study": "bad", "files": ["trials.c')
    w.paths["old-report"] = truncated
    (w.tmp / "dangling").symlink_to(w.tmp / "nowhere")
    w.paths["dangling"] = w.tmp / "dangling"


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def change(data: dict) -> None:
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value

    return change


def _run_variant(name: str, change, *extra: str) -> Callable[[World], list[str]]:
    """`sweep run` on a variant of the study's spec, as a new study (unless ``extra`` says)."""

    def args(w: World) -> list[str]:
        path = w.variant(name.replace(" ", "_"), lambda d: change(d, w))
        fresh = [] if extra else ["--study-name", "fresh"]
        return ["run", str(path), "--storage", w.url, *fresh, *extra]

    return args


def _field(*keys_and_value):
    setter = _set(*keys_and_value)
    return lambda data, w: setter(data)


def _model(kind: str):
    return lambda data, w: data.update(model=str(w.paths[kind]))


def _cmd(*parts: str) -> Callable[[World], list[str]]:
    """A command line; ``{spec}``, ``{url}``, ``{tmp}``, ``{secret}`` and ``{<path name>}`` are
    filled in."""

    def args(w: World) -> list[str]:
        names = {"spec": w.spec, "url": w.url, "tmp": w.tmp, "secret": SECRET, **w.paths}
        return [p.format(**names) for p in parts]

    return args


def _one_config(name: str, change) -> Callable[[World], list[str]]:
    """`sweep compress` on a variant of the study's spec narrowed to one configuration (4-bit
    round-to-nearest), as `sweep export` writes one."""

    def narrow(data: dict, w: World) -> None:
        data["search"].update(sparsity={"values": [0.0]}, bits=[4])
        change(data, w)

    def args(w: World) -> list[str]:
        return ["compress", str(w.variant(name, lambda d: narrow(d, w)))]

    return args


def _spec_text(name: str, text: Callable[[World], str], command: str = "run"):
    """`sweep <command>` on a spec file written as ``text``."""

    def args(w: World) -> list[str]:
        path = w.tmp / f"{name}.yaml"
        path.write_text(text(w))
        return [command, str(path), "--storage", w.url]

    return args


def _alias_bomb(w: World) -> str:
    """The spec, and under search.first nine lists of ten aliases to the list before."""
    levels = ["    - &l0 [a, a, a, a, a, a, a, a, a, a]"]
    levels += [f"    - &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 10)]
    first = "search:\n  first:\n" + "\n".join(levels) + "\n"
    return w.spec.read_text().replace("search:\n", first, 1)


@dataclass(frozen=True)
class Row:
    args: Callable[[World], list[str]]
    says: tuple[str, ...]  # in the error message; the first names the bad input


ROWS: dict[str, Row] = {
    # the spec's fields
    "missing model path": Row(_run_variant("nomodel", _field("model", "./no/such/model")),
                              ("model folder", "does not exist")),
    "unknown task": Row(_run_variant("task", _field("evaluation", "tasks", ["toy_recal"])),
                        ("unknown lm-eval task 'toy_recal'", "toy_recall")),
    "sparsity outside [0, 1)": Row(
        _run_variant("sparsity", _field("search", "sparsity", {"values": [0.5, 1.0]})),
        ("search.sparsity.values", "less than 1")),
    "unsupported bit-width": Row(_run_variant("bits", _field("search", "bits", [4, 6])),
                                 ("search.bits", "6", "allowed")),
    "invalid N:M pattern": Row(_run_variant("nm", _field("search", "patterns", ["4:2"])),
                               ("search.patterns", "0 < N < M", "'4:2'")),
    "unknown sparsity profile": Row(_run_variant("profile", _field("search", "profiles", ["flat"])),
                                    ("search.profiles", "'flat'", "owl")),
    "OWL lambda out of range": Row(_run_variant("lam", _field("search", "owl_lambdas", [0.7])),
                                   ("search.owl_lambdas", "0.7", "(0, 0.5)")),
    "unknown sampler": Row(_run_variant("sampler", _field("sampler", {"name": "nsga3"})),
                           ("sampler.name", "Did you mean 'nsga2'")),
    "misspelt field": Row(_run_variant("typo", _field("serach", {})), ("serach: unknown field",)),
    "unknown device": Row(_run_variant("tpu", _field("device", "tpu9")),
                          ("unknown device 'tpu9'", "cuda:N")),
    "cuda without a GPU": Row(_run_variant("cuda", _field("device", "cuda")),
                              ("device 'cuda': no CUDA GPU is visible", "auto or cpu")),
    "a group size that divides no layer": Row(
        _run_variant("g7", _field("search", "group_sizes", [7])),
        ("search.group_sizes: 7 does not divide", "model.layers.0.self_attn.q_proj (64)",
         "fit every layer: [8, 16, 32, 64]")),
    "a group size wider than some layers": Row(
        _run_variant("g128", _field("search", "group_sizes", [32, 128])),
        ("search.group_sizes: 128 does not divide", "(64)")),
    "empty calibration file": Row(
        _run_variant("emptycal", lambda d, w: d["calibration"].update(path=str(w.tmp / "empty.txt"))
                     or d["search"].update(prune_methods=["sparsegpt"])),
        ("calibration file", "is empty")),
    "missing calibration file": Row(
        _run_variant("nocal", lambda d, w: d["calibration"].update(path=str(w.tmp / "none.txt"))
                     or d["search"].update(quant_methods=["gptq"])),
        ("calibration file", "does not exist")),
    "no calibration for methods that need it": Row(
        _run_variant("nocalsection", lambda d, w: d["search"].update(prune_methods=["wanda"])
                     or d.pop("calibration") and None),
        ("need calibration data", "no `calibration` section")),
    "a band upside down": Row(
        _run_variant("band", _field("constraints", {"tcr": {"min": 0.8, "max": 0.5}})),
        ("constraints.tcr", "max (0.5) must be >= min (0.8)")),
    "an objective twice": Row(_run_variant("twice", _field("objectives", ["sr", "sr"])),
                              ("objectives", "must not repeat")),
    "an alias bomb": Row(_spec_text("bomb", _alias_bomb, "status"),
                         ("its YAML aliases (*name) repeat 12,345,678,990 nodes",
                          "more than the 10,000 allowed")),
    "a spec file over 1 MiB": Row(
        _spec_text("huge", lambda w: w.spec.read_text() + "#" + "x" * (1 << 20) + "\n"),
        ("huge.yaml is over 1 MiB",)),
    "a password in the URL's query (run)": Row(
        _cmd("run", "{spec}", "--storage", f"{QUERY}{{secret}}"), (REFUSED,)),
    "a password in the URL's query (status)": Row(
        _cmd("status", "--storage", f"{QUERY}{{secret}}", "--study-name", "bad"),
        (REFUSED,)),
    "a password in the URL's query (worker)": Row(
        _cmd("worker", "--storage", f"{QUERY}{{secret}}", "--study", "bad"),
        (REFUSED,)),
    "a YAML syntax error on the storage line": Row(
        _spec_text("storageline", lambda w: w.spec.read_text() + f"storage: {PLANTED}: [\n"),
        ("not valid YAML: mapping values are not allowed here",)),
    "a list where the storage URL goes": Row(
        _run_variant("storagelist", _field("storage", [PLANTED])),
        ("storage: Input should be a valid string", "alice:***@127.0.0.1:1/sweep?password=***")),
    "kl_tokens below one sequence": Row(
        _run_variant("kl", _field("evaluation", "stages", {"kl_tokens": 31, "kl_seq_len": 128})),
        ("evaluation.stages: kl_tokens (31) must be at least kl_seq_len (128)",)),
    "a sparsity step of 1e-7": Row(
        _run_variant("step", _field("search", "sparsity", {"low": 0.0, "high": 0.5, "step": 1e-7})),
        ("search.sparsity.step", "finer than sparsities are kept", "at least 1e-06")),
    "too many configurations": Row(
        _run_variant("many", _field("search", "sparsity", {"low": 0.0, "high": 0.5, "step": 1e-6})),
        ("search: the space holds 4,500,005 configurations",
         "more than max_configurations (100,000)")),
    "OWL's M nan": Row(_run_variant("mnan", _field("search", "owl_ms", [float("nan")])),
                       ("search.owl_ms.0: Input should be a finite number", "nan")),
    "OWL's M inf": Row(_run_variant("minf", _field("search", "owl_ms", [5.0, float("inf")])),
                       ("search.owl_ms.1: Input should be a finite number", "inf")),
    "a mixed allocation at 16 bits": Row(
        _run_variant("mixed16", lambda d, w: d["search"].update(allocations=["mixed"], bits=[16])),
        ("search: allocations ['mixed'] with bits [16] give no configuration",
         "one of [3, 4] to bits")),
    # weight formats
    "an unknown weight format": Row(
        _run_variant("fp4", _field("search", "formats", ["int", "fp4"])),
        ("search.formats: unknown weight format 'fp4'", "allowed: int, fp8, nvfp4, mxfp4")),
    "a bit-width given to a float format": Row(
        _run_variant("nvfp4bits", lambda d, w: d["search"].update(
            formats=["int", "nvfp4"], first=[{"format": "nvfp4", "bits": 3}])),
        ("search.first[0]: bits has no effect here",)),
    "activations on a format without them": Row(
        _run_variant("nvfp4acts", lambda d, w: d["search"].update(
            formats=["nvfp4", "fp8"], activations=["none", "fp8_dynamic"],
            first=[{"format": "nvfp4", "activations": "fp8_dynamic"}])),
        ("search.first[0]: activations has no effect here",)),
    "an unknown activation quantization": Row(
        _run_variant("int8acts", _field("search", "activations", ["int8"])),
        ("search.activations: unknown activation quantization 'int8'",
         "allowed: none, fp8_dynamic")),
    "a float format the target GPU does not run": Row(
        _run_variant("fp8gpu", lambda d, w: d.update(
            deploy={"runtime": "vllm", "gpu": "7.5"},
            search={**d["search"], "formats": ["fp8"], "allocations": ["uniform"]})),
        ("vLLM 0.34 serves none of the search space's quantized forms (formats ['fp8']",
         "need 8.0 or above")),
    # a deploy target that is not one
    "an unknown runtime": Row(
        _run_variant("runtime", _field("deploy", {"runtime": "tensorrt"})),
        ("deploy.runtime: unknown runtime 'tensorrt'; allowed: vllm, transformers, none",)),
    "a compute capability that is not one": Row(
        _run_variant("gpu", _field("deploy", {"runtime": "vllm", "gpu": "9.5"})),
        ("deploy.gpu: '9.5' is not a compute capability", "8.9, 9.0, 10.0")),
    "vLLM without a GPU": Row(
        _run_variant("nogpu", _field("deploy", {"runtime": "vllm"})),
        ("deploy: runtime vllm serves what the GPU runs", 'gpu: "8.0"')),
    "a runtime that serves nothing in the space": Row(
        _run_variant("unserved", lambda d, w: d.update(
            deploy={"runtime": "vllm", "gpu": "7.0"},
            search={**d["search"], "bits": [2, 4], "allocations": ["uniform"]})),
        ("vLLM 0.34 serves none of the search space's quantized forms",
         "compute capability 7.0", "need 7.5 or above")),
    "deploy_ratio with no runtime": Row(
        _run_variant("noruntime", _field("objectives", ["srcr", "deploy_ratio"])),
        ("deploy_ratio (an objective or a constraint) is what a runtime holds",)),
    # models that are not what a study needs
    "truncated safetensors": Row(_run_variant("garbled", _model("garbled")),
                                 ("cannot load model", "garbled")),
    "not a causal LM": Row(_run_variant("t5", _model("t5")),
                           ("is not a causal language model", "T5Config")),
    "code that ships with the model": Row(_run_variant("remote", _model("remote")),
                                          ("trust_remote_code: true",)),
    "pickle refused by weights_only": Row(_run_variant("pickled", _model("pickled")),
                                          ("pickle checkpoint", "weights_only")),
    "a model folder without a config": Row(_run_variant("emptymodel", _model("empty")),
                                           ("cannot load model", "empty-model")),
    # a stored study's pinned fields
    "changed search space": Row(
        _run_variant("space", _field("search", "bits", [2, 4, 16]), "--trials", "1"),
        ("was created with another spec", "search.bits: [2, 3, 4, 8, 16] -> [2, 4, 16]",
         "--study-name")),
    "changed deploy target": Row(
        _run_variant("deploytarget", _field("deploy", {"runtime": "transformers"}), "--trials",
                     "1"),
        ("was created with another spec", 'deploy.runtime: "none" -> "transformers"')),
    "changed constraints": Row(
        _run_variant("constraints", _field("constraints", {"sr": {"min": 0.9}}), "--trials", "1"),
        ("was created with another spec", "constraints.sr", "--study-name")),
    # inputs other than those a spec names by content (sweep.identity)
    "a calibration set other than the spec's": Row(
        _run_variant("calpin", lambda d, w: d.update(fingerprints={"calibration": "0" * 64})
                     or d["search"].update(quant_methods=["gptq"])),
        ("the calibration tokens are not those the spec was calibrated on", "calibration file",
         "0000000000 then")),
    "a tokenizer other than the spec's": Row(
        _run_variant("tokpin", _field("fingerprints", {"tokenizer": "0" * 64})),
        ("the tokenizer of model", "is not the one the spec was measured with")),
    "compress a configuration whose task prompts changed": Row(
        _one_config("prompts", _field("fingerprints", {"prompts": "0" * 64})),
        ("the lm-eval configuration of the tasks", "prompts.yaml was scored with")),
    # files and options
    "malformed YAML": Row(_cmd("run", "{tmp}/malformed.yaml", "--storage", "{url}"),
                          ("not valid YAML",)),
    "missing spec file": Row(_cmd("run", "{tmp}/nope.yaml", "--storage", "{url}"),
                             ("study spec", "nope.yaml does not exist")),
    "a study name that climbs out of runs/": Row(
        _cmd("run", "{spec}", "--storage", "{url}", "--study-name", "../x"),
        ("--study-name", "'../x'", "letters, digits")),
    "an in-memory database": Row(_cmd("run", "{spec}", "--storage", "sqlite:///:memory:"),
                                 ("in-memory SQLite database", "keeps nothing")),
    "not a database URL": Row(_cmd("run", "{spec}", "--storage", "runs/x.db"),
                              ("'runs/x.db' is not a database URL",)),
    "unreachable database, password masked": Row(
        _cmd("run", "{spec}", "--storage", "postgresql+psycopg2://nobody:{secret}@127.0.0.1:1/no"),
        ("cannot open study storage postgresql+psycopg2://nobody:***@127.0.0.1:1/no",)),
    "zero trials": Row(_cmd("run", "{spec}", "--storage", "{url}", "--trials", "0"),
                       ("Invalid value for '--trials'",)),
    "zero workers": Row(_cmd("run", "{spec}", "--storage", "{url}", "--workers", "0"),
                        ("Invalid value for '--workers'",)),
    "worker on a missing database": Row(
        _cmd("worker", "--storage", "sqlite:///{tmp}/elsewhere.db", "--study", "bad"),
        ("no study database at", "elsewhere.db")),
    "worker on a missing study": Row(_cmd("worker", "--storage", "{url}", "--study", "bda"),
                                     ("no study 'bda'", "'bad'")),
    "worker on an unknown device": Row(
        _cmd("worker", "--storage", "{url}", "--study", "bad", "--device", "tpu9"),
        ("unknown device 'tpu9'",)),
    "status of a missing study": Row(
        _cmd("status", "--storage", "{url}", "--study-name", "nope"), ("no study 'nope'",)),
    "report on an unknown axis": Row(
        _cmd("report", "{spec}", "--storage", "{url}", "--x", "ratio"),
        ("--x must be 'tcr', 'real_ratio' or 'deploy_ratio'", "'ratio'")),
    "report into a folder of the user's": Row(
        _cmd("report", "{spec}", "--storage", "{url}", "--out", "{busy}"),
        ("busy is not empty and holds no earlier report",)),
    "export of a trial that does not exist": Row(
        _cmd("export", "{spec}", "--storage", "{url}", "--trial", "999"),
        ("trial 999 is not a complete trial", "complete trials: 0")),
    "export into a folder of the user's": Row(
        _cmd("export", "{spec}", "--storage", "{url}", "--out", "{busy}"),
        ("busy is not empty and holds no earlier export",)),
    "export beside a user's file in an earlier export": Row(
        _cmd("export", "{spec}", "--storage", "{url}", "--out", "{exported}"),
        ("holds id_rsa, which the earlier export did not write",)),
    "export into a folder whose card is a link out of it": Row(
        _cmd("export", "{spec}", "--storage", "{url}", "--out", "{linked}"),
        ("README.md is a symbolic link (to", "outside.md")),
    "export --out a dangling link": Row(
        _cmd("export", "{spec}", "--storage", "{url}", "--out", "{dangling}"),
        ("dangling is a symbolic link (to", "nowhere")),
    "report over a truncated manifest": Row(
        _cmd("report", "{spec}", "--storage", "{url}", "--out", "{old-report}"),
        ("sweep-report.json is not a manifest that sweep report wrote",)),
    "worker with -1 threads": Row(
        _cmd("worker", "--storage", "{url}", "--study", "bad", "--threads", "-1"),
        ("Invalid value for '--threads'", "greater than or equal to 1")),
    "dashboard on port 0": Row(_cmd("dashboard", "{spec}", "--storage", "{url}", "--port", "0"),
                               ("Invalid value for '--port'",)),
    "compress a spec of many configurations": Row(_cmd("compress", "{spec}"),
                                                  ("exactly one configuration",)),
    "dashboard on a missing database": Row(
        _cmd("dashboard", "{spec}", "--storage", "sqlite:///{tmp}/missing.db"),
        ("no study database at",)),
}  # fmt: skip


SLOW_ROWS = {"unknown task"}  # indexes every task lm-eval ships


@pytest.mark.parametrize(
    "case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW_ROWS else c for c in ROWS]
)
def test_bad_input_is_refused_in_one_line_and_changes_nothing(world: World, case: str, monkeypatch):
    if case == "cuda without a GPU" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    row = ROWS[case]
    monkeypatch.chdir(world.tmp)
    (world.tmp / "malformed.yaml").write_text("name: bad\nsearch: {bits: [2, 4\n")
    before = db_contents(world.url)
    args = row.args(world)  # may write a variant of the spec
    files_before = {p.name for p in world.tmp.iterdir() if not p.name.endswith(("-wal", "-shm"))}
    result = CliRunner().invoke(app, args)
    err = result.stderr
    said = " ".join(err.split())
    assert result.exit_code == 2, f"{result.output}\n{result.exception!r}"
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output and len(err.splitlines()) <= 12, err
    for text in row.says:
        assert text in said, f"{text!r} not in: {err}"
    if "error:" in err:  # ours (typer writes its usage errors in a box of its own)
        assert row.says[0] in " ".join(err[err.index("error:") :].split())
    assert SECRET not in result.stdout + result.stderr
    assert db_contents(world.url) == before
    written = {p.name for p in world.tmp.iterdir() if not p.name.endswith(("-wal", "-shm"))}
    assert written == files_before  # nothing else (SQLite's own journal files aside)
    for name, (text, mode) in UNTOUCHABLE.items():
        path = world.tmp / name
        assert (path.read_text(), path.stat().st_mode & 0o777) == (text, mode), name
    assert not (world.tmp / "nowhere").exists()


def test_the_table_holds_every_bad_input_found_so_far():
    assert len(ROWS) >= 71


def test_the_stored_spec_and_the_status_hold_no_secret(world: World):
    study = optuna.load_study(study_name="bad", storage=world.url)
    stored = study.user_attrs["spec"]["storage"]  # the dashboard shows it
    assert stored == "postgresql+psycopg2://alice:***@127.0.0.1:1/sweep?password=***"
    assert SECRET not in json.dumps(study.user_attrs)
    shown = CliRunner().invoke(app, ["status", "--storage", world.url, "--study-name", "bad"])
    assert shown.exit_code == 0 and "1 complete" in shown.stdout, shown.output
    assert SECRET not in shown.stdout + shown.stderr


def test_a_trial_whose_group_size_the_model_cannot_store_is_refused_before_recompressing(
    world: World,
):
    # such a trial can no longer be run; a study from before the check may hold one
    url = f"sqlite:///{world.tmp / 'old.db'}"
    source = sqlite3.connect(world.url.removeprefix("sqlite:///"))
    copy = sqlite3.connect(world.tmp / "old.db")
    source.backup(copy)  # what the WAL holds too
    source.close()
    copy.close()
    study = optuna.load_study(study_name="bad", storage=url)
    config = CompressionConfig(bits=4, group_size=7)
    done = study.get_trials(states=(TrialState.COMPLETE,))[0]
    measured = Measurement.from_dict(done.user_attrs)
    trial = study.ask()
    TrialRecord(trial.number, TrialState.COMPLETE, config, measured).store(trial)
    study.tell(trial, done.values)
    before = db_contents(url)
    result = CliRunner().invoke(app, ["export", "--storage", url, "--study-name", "bad",
                                      "--trial", str(trial.number), "--no-progress",
                                      "--out", str(world.tmp / "g7")])  # fmt: skip
    assert result.exit_code == 2, result.output
    said = " ".join(result.stderr.split())
    assert f"trial {trial.number} (rtn-w4-g7-asym) cannot be exported" in said
    assert "group size 7 does not divide the input width of" in said
    assert not (world.tmp / "g7").exists() and db_contents(url) == before
