"""A study of the float formats on the toy model, through the command line: every trial
measured with its format's nominal bits for TCr and its scales in the real ratio, judged by
vLLM's rows for the format, shown on the front, and exported in its compressed-tensors format."""

import json
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from sweep.compress.formats import FORMATS
from sweep.metrics import theoretical_compression_rate

from .helpers import sweep
from .toy import toy_spec

pytestmark = pytest.mark.slow  # a whole study through the CLI


def test_a_study_of_the_float_formats_runs_measures_and_reports(toy_dir: Path, tmp_path: Path):
    spec_path = toy_spec(
        toy_dir, "formats", formats=["fp8", "nvfp4", "mxfp4"], bits=[16],
        sparsity={"values": [0.0, 0.5]}, prune_methods=["sparsegpt"], quant_methods=["gptq"],
        orders=["prune_first"],
    )  # fmt: skip
    spec = yaml.safe_load(spec_path.read_text())
    spec.update(trials=6, sampler={"name": "grid", "seed": 0},
                deploy={"runtime": "vllm", "gpu": "8.0"})  # fmt: skip
    spec_path.write_text(yaml.safe_dump(spec))
    url = f"sqlite:///{tmp_path / 'formats.db'}"
    done = sweep("run", str(spec_path), "--storage", url, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr

    study = optuna.load_study(study_name="formats", storage=url)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 6
    seen = set()
    for t in trials:
        a = t.user_attrs
        name = a["config"]["format"]
        fmt = FORMATS[name]
        seen.add((name, a["measured_sparsity"] > 0))
        assert a["config"]["bits"] == fmt.nominal_bits
        assert a["tcr"] == pytest.approx(
            theoretical_compression_rate(a["measured_sparsity"], fmt.nominal_bits)
        )
        # the real ratio counts the scales: nvfp4 below 16 / 4.5, mxfp4 below 16 / 4.25
        assert a["real_ratio"] < 16 / fmt.bits_per_weight(64)
        assert a["deployable"] is True
        scheme = {"fp8": "FP8 W8A16", "nvfp4": "NVFP4A16", "mxfp4": "MXFP4A16"}[name]
        assert f"served as {scheme}" in a["deploy_reason"]
        assert a["config_key"].split()[-1 if a["measured_sparsity"] == 0 else 1] == (f"gptq-{name}")
    assert seen == {(f, p) for f in FORMATS for p in (False, True)}
    ratios = {t.user_attrs["config"]["format"]: t.user_attrs["real_ratio"] for t in trials}
    assert ratios["fp8"] < ratios["nvfp4"] < ratios["mxfp4"]  # 8 bits; 4.5; 4.25 per weight
    assert "Pareto front" in done.stdout

    report = sweep("report", "--storage", url, "--study-name", "formats",
                   "--out", str(tmp_path / "report"), cwd=tmp_path)  # fmt: skip
    assert report.returncode == 0, report.stdout + report.stderr
    table = (tmp_path / "report" / "trials.csv").read_text()
    assert "gptq-nvfp4" in table and "gptq-mxfp4" in table and "gptq-fp8" in table

    full = [t for t in trials if t.user_attrs["stage"] == "full"]
    chosen = next(t for t in full if t.user_attrs["config"]["format"] != "fp8") if any(
        t.user_attrs["config"]["format"] != "fp8" for t in full) else full[0]  # fmt: skip
    name = chosen.user_attrs["config"]["format"]
    out = tmp_path / "exported"
    exported = sweep("export", "--storage", url, "--study-name", "formats",
                     "--trial", str(chosen.number), "--out", str(out), cwd=tmp_path)  # fmt: skip
    assert exported.returncode == 0, exported.stdout + exported.stderr
    stored = {"fp8": "float-quantized", "nvfp4": "nvfp4-pack-quantized",
              "mxfp4": "mxfp4-pack-quantized"}[name]  # fmt: skip
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert config["format"] == stored
    assert stored in (out / "README.md").read_text()


def test_nvfp4_activations_run_calibrated_are_judged_by_their_gpu_and_export(
    toy_dir: Path, tmp_path: Path
):
    from safetensors import safe_open

    spec_path = toy_spec(
        toy_dir, "w4a4", formats=["nvfp4"], activations=["none", "nvfp4"], bits=[16],
        sparsity={"values": [0.0]}, quant_methods=["rtn"],
    )  # fmt: skip
    spec = yaml.safe_load(spec_path.read_text())
    spec.update(trials=2, sampler={"name": "grid", "seed": 0},
                deploy={"runtime": "vllm", "gpu": "9.0"})  # fmt: skip
    # first, so that no front stops it after its sample: it has its full evaluation to export
    spec["search"]["first"] = [{"activations": "nvfp4"}]
    spec_path.write_text(yaml.safe_dump(spec))
    url = f"sqlite:///{tmp_path / 'w4a4.db'}"
    done = sweep("run", str(spec_path), "--storage", url, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    trials = optuna.load_study(study_name="w4a4", storage=url).get_trials(
        states=(TrialState.COMPLETE,)
    )
    by_acts = {t.user_attrs["config"]["activations"]: t for t in trials}
    assert set(by_acts) == {"none", "nvfp4"}
    w4a4 = by_acts["nvfp4"]
    assert w4a4.params["activations:nvfp4"] == "nvfp4"
    assert w4a4.user_attrs["config_key"] == "rtn-nvfp4-nvfp4"
    assert w4a4.user_attrs["deployable"] is False and "10.0" in w4a4.user_attrs["deploy_reason"]
    assert by_acts["none"].user_attrs["deployable"] is True
    # the activations are calibrated (RTN alone needs no data) and evaluated: the W4A4 model's
    # outputs are further from the base model's
    assert w4a4.user_attrs["timings"]["calibration_s"] > 0
    assert by_acts["none"].user_attrs["timings"]["calibration_s"] == 0
    assert w4a4.user_attrs["kl"] > by_acts["none"].user_attrs["kl"]

    out = tmp_path / "exported"
    args = ("export", "--storage", url, "--study-name", "w4a4", "--trial", str(w4a4.number),
            "--out", str(out))  # fmt: skip
    refused = sweep(*args, cwd=tmp_path)  # the target GPU does not run it
    assert refused.returncode == 2 and "needs compute capability 10.0" in refused.stderr
    exported = sweep(*args, "--force", cwd=tmp_path)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    group = json.loads((out / "config.json").read_text())["quantization_config"]["config_groups"]
    assert group["group_0"]["input_activations"]["group_size"] == 16
    with safe_open(out / "model.safetensors", "pt") as f:
        scales = [k for k in f.keys() if k.endswith("input_global_scale")]  # noqa: SIM118
    assert len(scales) == 2 * 7  # every compressed Linear of the toy's two blocks

    only = yaml.safe_load(spec_path.read_text())
    only["search"]["activations"] = ["nvfp4"]
    only["name"] = "w4a4-only"
    spec_path.write_text(yaml.safe_dump(only))
    refused = sweep("run", str(spec_path), "--storage", url, cwd=tmp_path)
    assert refused.returncode == 2 and "these forms need 10.0 or above" in refused.stderr
