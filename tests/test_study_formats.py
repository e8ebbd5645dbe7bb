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
