"""Defects found by trying the tool as a hostile user, each kept fixed: a model changed under a
study, a continued study repeating itself, budgets of new configurations, reports of partial
studies, exports of float32 and bfloat16 checkpoints, remote code on a terminal, a full disk."""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState
from transformers import AutoModelForCausalLM

from sweep.compress import CompressionConfig
from sweep.events import Events
from sweep.model import load_model
from sweep.record import trial_records
from sweep.spec import load_spec
from sweep.workers import prepare_runner

from .helpers import SWEEP, db_contents, env, sweep
from .toy import toy_spec

pytestmark = pytest.mark.slow  # whole studies through the CLI


def _spec(toy: Path, folder: Path, name: str, **fields) -> Path:
    """A toy spec written into ``folder``; ``fields`` replace top-level fields or, for
    ``search``, fields of the search space."""
    data = yaml.safe_load(toy_spec(toy, name).read_text())
    search = fields.pop("search", {})
    data["search"].update(search)
    data.update(fields)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _computed(url: str, name: str) -> list[str]:
    study = optuna.load_study(study_name=name, storage=url)
    return [r.config_key for r in trial_records(study) if r.computed]


def test_a_model_changed_in_place_is_refused_by_run_export_and_compress(toy_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(toy_dir / "model", model)
    spec = _spec(toy_dir, tmp_path, "moved", model=str(model))
    url = f"sqlite:///{tmp_path / 'moved.db'}"
    assert sweep("run", str(spec), "--trials", "1", "--storage", url, cwd=tmp_path).returncode == 0
    exported = tmp_path / "exported"
    done = sweep("export", "--storage", url, "--study-name", "moved", "--out", str(exported),
                 "--no-progress", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr

    weights, _ = load_model(model)
    with torch.no_grad():
        weights.model.layers[0].mlp.down_proj.weight.mul_(0.5)  # someone edits the weights
    weights.save_pretrained(model)
    before = db_contents(url)
    for args in (
        ["run", str(spec), "--trials", "1", "--storage", url],
        ["export", "--storage", url, "--study-name", "moved", "--out", str(tmp_path / "again")],
        ["compress", str(exported / "sweep-trial.yaml")],
    ):
        result = sweep(*args, cwd=tmp_path)
        assert result.returncode == 2, result.stdout + result.stderr
        said = " ".join(result.stderr.split())
        assert f"the weights of model {model} are not those" in said, said
        assert "Traceback" not in result.stderr
    assert db_contents(url) == before
    assert not (tmp_path / "again").exists()


def test_a_continued_study_draws_new_configurations(toy_dir, tmp_path):
    spec = toy_spec(toy_dir, "again")
    url = f"sqlite:///{tmp_path / 'again.db'}"
    for _ in range(2):
        done = sweep("run", str(spec), "--trials", "2", "--storage", url, cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
    study = optuna.load_study(study_name="again", storage=url)
    keys = [t.user_attrs["config_key"] for t in study.get_trials(states=(TrialState.COMPLETE,))]
    # each process used to seed its sampler alike: the second run asked for trials 0 and 1 again
    assert keys[2:4] != keys[0:2]
    assert "result reused" not in done.stdout


def test_trials_counts_new_configurations_and_a_run_stops_when_the_space_is_done(toy_dir, tmp_path):
    # four configurations: 16-bit or 8-bit, dense or 50% pruned (quantize-then-prune)
    spec = _spec(toy_dir, tmp_path, "budget", search={"sparsity": {"values": [0.0, 0.5]},
                 "bits": [8, 16], "orders": ["quant_first"]})  # fmt: skip
    url = f"sqlite:///{tmp_path / 'budget.db'}"
    first = sweep("run", str(spec), "--trials", "3", "--storage", url, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    computed = _computed(url, "budget")
    assert len(computed) == len(set(computed)) == 3  # repeats the sampler asked for don't count
    assert "3 of 3 new configurations computed" in first.stdout

    second = sweep("run", str(spec), "--trials", "5", "--storage", url, cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert sorted(set(_computed(url, "budget"))) == sorted(_computed(url, "budget"))
    assert len(_computed(url, "budget")) == 4  # the last one, then nothing is left
    assert "1 of 5 new configurations computed" in second.stdout


def test_reports_of_partial_studies_say_what_they_cannot_show(toy_dir, tmp_path):
    # only failures: every 3:7 trial raises on this model (its widths are not multiples of 7)
    failing = _spec(toy_dir, tmp_path, "failing", search={"patterns": ["3:7"]})  # 9 configs
    url = f"sqlite:///{tmp_path / 'partial.db'}"
    run = sweep("run", str(failing), "--trials", "2", "--storage", url, cwd=tmp_path)
    assert run.returncode == 2 and "5 trials in a row failed" in run.stderr, run.stderr
    assert "divisible by 7" in run.stderr
    # pruning only: a front, but no quantization-only trial for the paper's table
    pruning = _spec(toy_dir, tmp_path, "pruning", search={"bits": [16]})
    run = sweep("run", str(pruning), "--trials", "2", "--storage", url, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr

    for name, says, files in (
        ("failing", "has no complete trial yet", {"trials.csv"}),
        ("pruning", "no complete trial quantizes without pruning",
         {"trials.csv", "pareto-srcr.html", "pareto-sr.html"}),
    ):  # fmt: skip
        out = tmp_path / f"report-{name}"
        done = sweep("report", "--storage", url, "--study-name", name, "--out", str(out),
                     "--no-png", cwd=tmp_path)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert says in " ".join(done.stdout.split())
        assert {p.name for p in out.iterdir()} == files | {"sweep-report.json"}
    csv = (tmp_path / "report-failing" / "trials.csv").read_text()
    assert csv.count("FAIL") == 5 and "divisible by 7" in csv
    # a second report into its own folder is allowed, and replaces it
    again = sweep("report", "--storage", url, "--study-name", "pruning", "--out",
                  str(tmp_path / "report-pruning"), "--no-png", cwd=tmp_path)  # fmt: skip
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_an_export_holds_exactly_what_its_trial_evaluated(toy_dir, tmp_path, dtype):
    model_dir = tmp_path / "model"
    model, tokenizer = load_model(toy_dir / "model")
    model.to(dtype).save_pretrained(model_dir)  # a float32 or a bfloat16 checkpoint
    tokenizer.save_pretrained(model_dir)
    one = {"sparsity": {"values": [0.5]}, "bits": [4], "orders": ["prune_first"]}
    spec = _spec(toy_dir, tmp_path, "exact", model=str(model_dir), search=one)
    url = f"sqlite:///{tmp_path / 'exact.db'}"
    assert sweep("run", str(spec), "--trials", "1", "--storage", url, cwd=tmp_path).returncode == 0
    out = tmp_path / "export"
    done = sweep("export", "--storage", url, "--study-name", "exact", "--out", str(out),
                 "--no-progress", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr

    # the model the trial evaluated: loaded and compressed as the study does it
    with prepare_runner(load_spec(spec), Events(), progress=False, evaluate=False) as runner:
        runner.compress(CompressionConfig(sparsity=0.5, bits=4, group_size=32))
        evaluated = runner.loaded.model
        ids = torch.tensor([tokenizer("the value of k3 is v2 .")["input_ids"]])
        reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
        with torch.no_grad():
            diff = (evaluated(ids).logits - reloaded(ids).logits).abs().max().item()
    assert diff == 0.0  # a float32 checkpoint's embeddings and norms were stored in bfloat16


def test_remote_code_is_refused_without_asking_on_a_terminal(toy_dir, tmp_path):
    remote = tmp_path / "remote"
    shutil.copytree(toy_dir / "model", remote)
    config = json.loads((remote / "config.json").read_text())
    config.update(model_type="sweep-custom", auto_map={"AutoConfig": "custom.C",
                  "AutoModelForCausalLM": "custom.M"})  # fmt: skip
    (remote / "config.json").write_text(json.dumps(config))
    (remote / "custom.py").write_text("raise SystemExit('this code must never run')\n")
    spec = _spec(toy_dir, tmp_path, "remote", model=str(remote))
    primary, replica = pty.openpty()  # stdin, stdout and stderr on a terminal, as a user's are
    start = time.monotonic()
    proc = subprocess.Popen([*SWEEP, "run", str(spec), "--storage",
                             f"sqlite:///{tmp_path / 'remote.db'}"], cwd=tmp_path, env=env(),
                            stdin=replica, stdout=replica, stderr=replica)  # fmt: skip
    os.close(replica)
    output = b""
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    code = proc.wait(timeout=120)
    text = " ".join(output.decode(errors="replace").split())
    assert code == 2, text
    assert "trust_remote_code: true" in text and "[y/N]" not in text
    assert time.monotonic() - start < 60  # no prompt waited for its answer


@pytest.fixture
def full_disk(tmp_path):
    """A 256 KiB file system, full once a few files are written (skipped where mounting a tmpfs
    is not allowed)."""
    mount = tmp_path / "full"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                          capture_output=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_ends_in_one_line_and_keeps_the_study(demo_grid_study, full_disk):
    url, name, folder = demo_grid_study
    before = db_contents(url)
    for command in (["report", "--no-png"], ["export", "--no-progress"]):
        done = sweep(*command, "--storage", url, "--study-name", name,
                     "--out", str(full_disk / command[0]), cwd=folder)  # fmt: skip
        assert done.returncode == 2, done.stdout + done.stderr
        assert "no space left on the disk" in done.stderr and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert db_contents(url) == before


def test_tasks_whose_questions_changed_are_refused(toy_dir, tmp_path):
    tasks = tmp_path / "tasks"
    shutil.copytree(toy_dir / "tasks", tasks)
    spec = _spec(toy_dir, tmp_path, "asked", evaluation={"tasks": ["toy_recall"],
                 "include_path": str(tasks)})  # fmt: skip
    url = f"sqlite:///{tmp_path / 'asked.db'}"
    assert sweep("run", str(spec), "--trials", "1", "--storage", url, cwd=tmp_path).returncode == 0
    data = tasks / "toy_recall" / "test.jsonl"
    data.write_text("".join(data.read_text().splitlines(keepends=True)[::2]))  # half of them
    before = db_contents(url)
    again = sweep("run", str(spec), "--trials", "1", "--storage", url, cwd=tmp_path)
    assert again.returncode == 2, again.stdout + again.stderr
    said = " ".join(again.stderr.split())
    assert "the documents of the tasks are not those study 'asked' was scored on" in said, said
    assert db_contents(url) == before


def test_evaluation_prints_nothing_of_its_own(toy_dir, capfd):
    from sweep.evaluation.harness import Evaluator
    from sweep.spec import EvaluationSpec

    model, tokenizer = load_model(toy_dir / "model")
    spec = EvaluationSpec(tasks=["toy_recall"], include_path=toy_dir / "tasks", limit=20)
    evaluator = Evaluator(spec, model, tokenizer)
    try:
        capfd.readouterr()
        scores = evaluator.score()
    finally:
        evaluator.close()
    out, err = capfd.readouterr()
    assert scores.tasks["toy_recall"] > 0.5
    assert out == "" and "it/s" not in err, err  # lm-eval's bars used to fill a log


def _checkpoint(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def test_a_damaged_or_full_calibration_cache_is_recomputed_or_named(toy_dir, tmp_path):
    cache = tmp_path / "cache"
    calibration = {**yaml.safe_load(toy_spec(toy_dir, "cached").read_text())["calibration"],
                   "cache_dir": str(cache)}  # fmt: skip
    gptq = {"sparsity": {"values": [0.0]}, "bits": [3, 4], "quant_methods": ["gptq"],
            "orders": ["prune_first"]}  # fmt: skip
    spec = _spec(toy_dir, tmp_path, "cached", calibration=calibration, search=gptq)
    url = f"sqlite:///{tmp_path / 'cached.db'}"
    done = sweep("run", str(spec), "--trials", "1", "--storage", url, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    (entry,) = cache.iterdir()

    def export(out: str) -> subprocess.CompletedProcess:
        return sweep("export", "--storage", url, "--study-name", "cached", "--out",
                     str(tmp_path / out), "--no-progress", cwd=tmp_path)  # fmt: skip

    assert export("intact").returncode == 0  # read from the cache
    before = db_contents(url)
    block = entry / "block-0001.pt"
    block.write_bytes(block.read_bytes()[:1000])  # a truncated block: recomputed, one line
    done = export("recomputed")
    assert done.returncode == 0, done.stdout + done.stderr
    said = [line for line in done.stdout.splitlines() if "calibration cache" in line]
    assert said == [f"calibration cache entry {entry} is damaged: block-0001.pt holds 1,000 "
                    f"bytes where {len(block.read_bytes()):,} were written; dropped it, "
                    "computing its statistics again"], done.stdout  # fmt: skip
    intact, recomputed = _checkpoint(tmp_path / "intact"), _checkpoint(tmp_path / "recomputed")
    assert intact.keys() == recomputed.keys()
    assert all(torch.equal(intact[n], recomputed[n]) for n in intact)  # nothing stale used
    assert db_contents(url) == before

    shutil.rmtree(cache)  # the disk of the cache fills while its entry is written
    cache.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(cache)],
                             capture_output=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    full = f"no space left on the disk for the calibration cache {cache} ("
    try:
        done = export("full")
        assert done.returncode == 2, done.stdout + done.stderr
        assert done.stderr.startswith(f"error: {full}"), done.stderr
        assert done.stderr.rstrip().endswith("complete trials are kept")
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
        assert list(cache.iterdir()) == [] and db_contents(url) == before

        stored = {r.number: r for r in _records(url, "cached")}
        done = sweep("run", str(spec), "--trials", "1", "--storage", url, cwd=tmp_path)
        assert "failed: gptq-w3-g32-asym: CacheDiskFull: no space left" in done.stdout
        assert done.returncode == 2  # the run stops: every later trial would fail the same way
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "no space left on the disk for the calibration cache" in done.stderr
        assert "Traceback" not in done.stderr and list(cache.iterdir()) == []
        records = _records(url, "cached")
        assert {r.number: r for r in records if r.number in stored} == stored
        (failed,) = [r for r in records if r.state == TrialState.FAIL]
        assert failed.number not in stored
        assert failed.fail_reason.startswith(f"CacheDiskFull: {full}"), failed.fail_reason
    finally:
        subprocess.run(["umount", str(cache)], check=False)


def _records(url: str, name: str) -> list:
    return trial_records(optuna.load_study(study_name=name, storage=url))
