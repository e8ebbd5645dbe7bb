"""`sweep export` and `sweep compress` on a small demo study: the folder, its checkpoint reloaded
(same logits, same scores, the stored size), the recipe, and the reproduction of the trial."""

import json
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState
from transformers import AutoModelForCausalLM

from sweep.compress import CompressionConfig, compress_model
from sweep.demo import DEMO_TASKS, MODEL_DIR, TASKS_DIR
from sweep.evaluation.harness import Evaluator
from sweep.model import load_model
from sweep.spec import EvaluationSpec

from ..helpers import REPO, sweep

EXPORTED = ("config.json", "model.safetensors", "tokenizer.json", "README.md",
            "sweep-trial.yaml", "recipe.yaml", "measurements.json")  # fmt: skip


def _trials(url: str, name: str) -> dict[str, optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=name, storage=url)
    return {t.user_attrs["config_key"]: t for t in study.get_trials(states=(TrialState.COMPLETE,))}


@pytest.fixture(scope="module")
def exported(demo_grid_study) -> tuple[Path, optuna.trial.FrozenTrial]:
    """The 4-bit quantization-only trial, exported."""
    url, name, folder = demo_grid_study
    trial = _trials(url, name)["rtn-w4-g128-asym"]
    out = folder / "export-w4"
    done = sweep("export", "--storage", url, "--study-name", name, "--trial", str(trial.number),
                 "--out", str(out), "--no-progress", cwd=folder)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return out, trial


def _tokens(n: int = 4, length: int = 48) -> torch.Tensor:
    from sweep.demo import CALIBRATION_FILE

    _, tokenizer = load_model(MODEL_DIR)
    lines = CALIBRATION_FILE.read_text().splitlines()[:n]
    ids = tokenizer(lines, add_special_tokens=False, padding="max_length", truncation=True,
                    max_length=length, return_tensors="pt")["input_ids"]  # fmt: skip
    return ids


def test_export_writes_a_folder_that_reloads_to_the_same_model(exported, one_thread):
    out, trial = exported
    assert {p.name for p in out.iterdir()} >= set(EXPORTED)
    config = CompressionConfig(**trial.user_attrs["config"])
    model, _ = load_model(MODEL_DIR)
    compress_model(model, config, progress=False, storage_dtype=torch.bfloat16)
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ids = _tokens()
    with torch.no_grad():
        diff = (model(ids).logits - reloaded(ids).logits).abs().max().item()
    assert diff <= 1e-4

    # the quantized layers are stored packed: the file shows the compression
    quant = json.loads((out / "config.json").read_text())["quantization_config"]
    assert quant["format"] == "pack-quantized"
    base_bytes = sum(p.numel() * 2 for p in model.parameters())
    size = (out / "model.safetensors").stat().st_size
    assert size == pytest.approx(base_bytes / trial.user_attrs["real_ratio"], rel=0.05)
    assert trial.user_attrs["real_ratio"] > 3.0


def test_exported_checkpoint_scores_as_the_trial(exported, demo_grid_study):
    out, trial = exported
    from transformers import AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    spec = EvaluationSpec(tasks=DEMO_TASKS, limit=60, batch_size=32)
    evaluator = Evaluator(spec, model, tokenizer, [TASKS_DIR])
    try:
        scores = evaluator.score()
    finally:
        evaluator.close()
    assert scores.tasks == pytest.approx(trial.user_attrs["task_scores"], abs=1e-9)


def test_export_records_config_recipe_and_card(exported):
    out, trial = exported
    from llmcompressor.recipe import Recipe

    measurements = json.loads((out / "measurements.json").read_text())
    assert measurements["config_key"] == "rtn-w4-g128-asym"
    assert measurements["measured"]["sr"] == trial.user_attrs["sr"]
    assert measurements["source"]["trial"] == trial.number
    recipe = Recipe.create_instance(str(out / "recipe.yaml"))
    assert [type(m).__name__ for m in recipe.modifiers] == ["QuantizationModifier"]
    card = (out / "README.md").read_text()
    assert "rtn-w4-g128-asym" in card and f"{trial.user_attrs['sr']:.4f}" in card
    assert "pack-quantized" in card
    for task, a in trial.user_attrs["agreement"].items():  # recovery, interval and flips
        assert f"| {a['recovery']:.1%} | {a['retention']:.3f} ({a['retention_low']:.3f}-" in card
        assert f"| {a['flips']} of {a['documents']} " in card and f"| {task} | " in card
    assert f"| Sr, 95% interval | {trial.user_attrs['sr_low']:.3f} to " in card
    spec = yaml.safe_load((out / "sweep-trial.yaml").read_text())
    assert spec["search"]["bits"] == [4] and spec["trials"] == 1


def test_compress_reproduces_the_exported_trial(exported, tmp_path):
    out, trial = exported
    again = tmp_path / "again"
    done = sweep("compress", str(out / "sweep-trial.yaml"), "--out", str(again), "--no-progress",
                 cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    measured = json.loads((again / "measurements.json").read_text())["measured"]
    a = trial.user_attrs
    for key in ("sr", "srcr", "tcr", "real_ratio", "measured_sparsity", "perplexity"):
        assert measured[key] == pytest.approx(a[key], rel=1e-6), key
    assert measured["task_scores"] == pytest.approx(a["task_scores"], abs=1e-9)
    assert (again / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()


def test_default_export_is_the_best_srcr(demo_grid_study, tmp_path):
    url, name, folder = demo_grid_study
    best = max(_trials(url, name).values(), key=lambda t: t.user_attrs["srcr"])
    done = sweep("export", "--storage", url, "--study-name", name, "--out", str(tmp_path / "x"),
                 "--no-progress", cwd=folder)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    measurements = json.loads((tmp_path / "x" / "measurements.json").read_text())
    assert measurements["source"]["trial"] == best.number
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "x").config.model_type == "llama"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--trial", "999"], "trial 999 is not a complete trial"),
        (["--out", "{busy}"], "is not empty and holds no earlier export"),
    ],
)
def test_export_refuses_bad_requests(demo_grid_study, tmp_path, args, message):
    url, name, folder = demo_grid_study
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    args = [a.format(busy=busy) for a in args]
    done = sweep("export", "--storage", url, "--study-name", name, *args, cwd=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr
    assert (busy / "notes.txt").read_text() == "mine"


def test_compress_refuses_a_spec_with_many_configurations(tmp_path):
    done = sweep("compress", str(REPO / "studies/demo.yaml"), cwd=tmp_path)
    assert done.returncode == 2
    assert "exactly one configuration" in done.stderr
