"""Inputs named by content: a calibration set, tokenizer or task changed in place under a study is
refused by every command that reads it, and never shares a stored result with the original."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from transformers import AutoTokenizer
from typer.testing import CliRunner

from sweep.cli import app
from sweep.compress import CompressionConfig
from sweep.identity import ResultContext, calibration_fingerprint, changes, tokenizer_fingerprint
from sweep.record import trial_records
from sweep.spec import Fingerprints, parse_spec

from .helpers import db_contents, sweep
from .toy import toy_spec

GPTQ_ONLY = {"quant_methods": ["gptq"], "bits": [4], "sparsity": {"values": [0.0]}}


def _spec(toy: Path, folder: Path, name: str, calibration: dict | None = None, **fields) -> Path:
    """A toy spec of one GPTQ configuration (which reads the calibration set) in ``folder``."""
    data = yaml.safe_load(toy_spec(toy, name, **GPTQ_ONLY).read_text())
    data["calibration"].update(calibration or {})
    data.update(fields)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _refused(args: list[str], *says: str) -> None:
    """The command, run in this process (as the bad-input table runs them), ends in exit code 2
    and a message that says each of ``says``."""
    done = CliRunner().invoke(app, [*args, "--no-progress"] if args[0] != "compress" else args)
    said = " ".join(done.stderr.split())
    assert done.exit_code == 2, f"{done.output}\n{done.exception!r}"
    assert "Traceback" not in done.output, done.output
    for text in says:
        assert text in said, f"{text!r} not in: {said}"


def _computed(url: str, name: str) -> list[bool]:
    study = optuna.load_study(study_name=name, storage=url)
    return [r.computed for r in trial_records(study) if r.measured]


@pytest.mark.slow
def test_a_calibration_file_edited_in_place_is_refused_and_its_results_not_reused(
    toy_dir, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    cal = tmp_path / "cal.txt"
    shutil.copy(toy_dir / "calibration.txt", cal)
    spec = _spec(toy_dir, tmp_path, "cal", {"path": str(cal)})
    url = f"sqlite:///{tmp_path / 'cal.db'}"
    assert sweep("run", str(spec), "--trials", "1", "--storage", url, cwd=tmp_path).returncode == 0
    exported = tmp_path / "exported"
    done = sweep("export", "--storage", url, "--study-name", "cal", "--out", str(exported),
                 "--no-progress", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    pinned = yaml.safe_load((exported / "sweep-trial.yaml").read_text())["fingerprints"]
    measured = json.loads((exported / "measurements.json").read_text())["fingerprints"]
    assert pinned["calibration"] == measured["calibration"] and len(pinned["calibration"]) == 64

    lines = cal.read_text().splitlines()
    cal.write_text("\n".join(reversed(lines)))  # the same words, other calibration windows
    before = db_contents(url)
    again = tmp_path / "again"
    for args in (
        ["run", str(spec), "--trials", "1", "--storage", url],
        ["worker", "--storage", url, "--study", "cal", "--no-progress"],
        ["export", "--storage", url, "--study-name", "cal", "--out", str(again)],
        ["compress", str(exported / "sweep-trial.yaml")],
    ):
        _refused(args, "the calibration tokens are not those", f"file {cal}")
    assert db_contents(url) == before
    assert not again.exists()

    # another study on the same file now computes its configuration: the key covers the tokens
    fresh = sweep("run", str(spec), "--trials", "1", "--storage", url, "--study-name", "fresh",
                  cwd=tmp_path)  # fmt: skip
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert _computed(url, "fresh") == [True]
    entries = [p for p in (tmp_path / "runs" / "calibration-cache").iterdir()
               if not p.name.startswith(".")]  # fmt: skip
    assert len(entries) == 2  # and so does the calibration cache's


@pytest.mark.slow
def test_a_calibration_function_that_returns_other_texts_is_refused(toy_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = tmp_path / "my_texts.py"
    text = (toy_dir / "calibration.txt").read_text()
    module.write_text(f"def texts():\n    return {text.splitlines()!r}\n")
    spec = _spec(toy_dir, tmp_path, "fn", {"source": "function", "function": "my_texts:texts",
                                          "path": None})  # fmt: skip
    url = f"sqlite:///{tmp_path / 'fn.db'}"
    # in a process of its own: this one must import the module first after it changes
    first = sweep("run", str(spec), "--trials", "1", "--storage", url, cwd=tmp_path, process=True)
    assert first.returncode == 0, first.stdout + first.stderr
    module.write_text(f"def texts():\n    return {text.splitlines()[1:]!r}\n")
    before = db_contents(url)
    _refused(["run", str(spec), "--trials", "1", "--storage", url],
             "the calibration tokens are not those", "function my_texts:texts")  # fmt: skip
    assert db_contents(url) == before


@pytest.mark.slow
def test_a_tokenizer_or_task_prompt_replaced_beside_unchanged_weights_is_refused(
    toy_dir, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    model, tasks = tmp_path / "model", tmp_path / "tasks"
    shutil.copytree(toy_dir / "model", model)
    shutil.copytree(toy_dir / "tasks", tasks)
    spec = _spec(toy_dir, tmp_path, "tok", model=str(model),
                 evaluation={"tasks": ["toy_recall"], "include_path": str(tasks)})  # fmt: skip
    url = f"sqlite:///{tmp_path / 'tok.db'}"
    assert sweep("run", str(spec), "--trials", "1", "--storage", url, cwd=tmp_path).returncode == 0
    before = db_contents(url)

    task = tasks / "toy_recall" / "toy_recall.yaml"
    original = task.read_text()
    task.write_text(
        original.replace('doc_to_text: "{{question}}"', 'doc_to_text: "Q: {{question}}"')
    )
    _refused(
        ["run", str(spec), "--trials", "1", "--storage", url],
        "the lm-eval configuration of the tasks (prompts, choices, metrics) is not the one "
        "study 'tok' was scored with",
    )
    task.write_text(original)

    tokenizer_file = model / "tokenizer.json"
    data = json.loads(tokenizer_file.read_text())
    vocab = data["model"]["vocab"]
    first, second = sorted(w for w in vocab if w.startswith("k"))[:2]
    vocab[first], vocab[second] = vocab[second], vocab[first]  # two words trade their ids
    tokenizer_file.write_text(json.dumps(data))
    _refused(["run", str(spec), "--trials", "1", "--storage", url],
             f"the tokenizer of model {model} is not the one")  # fmt: skip
    assert db_contents(url) == before


def test_fingerprints_follow_content_not_the_objects_that_hold_it(toy_dir):
    one = AutoTokenizer.from_pretrained(toy_dir / "model")
    two = AutoTokenizer.from_pretrained(toy_dir / "model")
    assert tokenizer_fingerprint(one) == tokenizer_fingerprint(two)
    two.add_tokens(["brand-new-word"])
    assert tokenizer_fingerprint(one) != tokenizer_fingerprint(two)

    ids = torch.arange(64).view(4, 16)
    assert calibration_fingerprint(ids) == calibration_fingerprint(ids.clone().int())
    assert calibration_fingerprint(ids) != calibration_fingerprint(ids.view(8, 8))
    assert calibration_fingerprint(ids) != calibration_fingerprint(ids.flip(0))


def test_changes_name_only_inputs_known_on_both_sides_that_differ():
    then = Fingerprints(weights="a" * 64, tokenizer="b" * 64, calibration="c" * 64)
    now = Fingerprints(weights="a" * 64, tokenizer="e" * 64, documents="d" * 64)
    lines = changes(then, now, "m", "study 'x' was")
    assert len(lines) == 1
    assert lines[0].startswith("the tokenizer of model m is not the one study 'x' was measured")
    assert "bbbbbbbbbbbb then, eeeeeeeeeeee now" in lines[0]
    assert then.known(now) == Fingerprints(weights="a" * 64, tokenizer="b" * 64,
                                           calibration="c" * 64, documents="d" * 64)  # fmt: skip


def test_the_results_key_covers_the_content_of_every_input(toy_dir):
    spec = parse_spec(yaml.safe_load(toy_spec(toy_dir, "key", **GPTQ_ONLY).read_text()))
    config = CompressionConfig(bits=4, quant_method="gptq", group_size=32)
    pins = Fingerprints(weights="w", tokenizer="t", calibration="c", documents="d", prompts="p")
    key = ResultContext.of(spec, pins).key(config)
    for field in Fingerprints.model_fields:
        other = pins.model_copy(update={field: "changed"})
        assert ResultContext.of(spec, other).key(config) != key, field
    # where the inputs lie is not part of it: the same content elsewhere shares results
    moved = spec.model_copy(update={"model": "/elsewhere/model"})
    assert ResultContext.of(moved, pins).key(config) == key


def test_nvfp4_results_computed_before_fused_tensor_scales_are_not_found_again(toy_dir):
    import hashlib
    import json

    spec = parse_spec(yaml.safe_load(toy_spec(toy_dir, "fmtkey", **GPTQ_ONLY).read_text()))
    pins = Fingerprints(weights="w", tokenizer="t", calibration="c", documents="d", prompts="p")
    context = ResultContext.of(spec, pins)

    def as_before(config: CompressionConfig) -> str:  # the key of version 1, when there was none
        fields = config.canonical().to_dict()
        fields.pop("activations")
        blob = json.dumps({"context": context.fields, "config": fields}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    nvfp4, mxfp4 = CompressionConfig(format="nvfp4"), CompressionConfig(format="mxfp4")
    assert context.key(nvfp4) != as_before(nvfp4)
    assert context.key(mxfp4) == as_before(mxfp4)  # unchanged formats keep their keys


def test_specs_written_before_fingerprints_still_load(toy_dir):
    data = yaml.safe_load(toy_spec(toy_dir, "old").read_text())
    assert parse_spec({**data, "model_fingerprint": "f" * 64}).fingerprints.weights == "f" * 64
    assert parse_spec({**data, "model_fingerprint": None}).fingerprints == Fingerprints()
