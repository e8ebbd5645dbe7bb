"""The float formats as compressed-tensors checkpoints: each Linear in its format's tensors and
sizes (what the real ratio counts), and the reload decoding to exactly the weights evaluated."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from sweep.compress import CompressionConfig, compress_model
from sweep.compress.blocks import compressible_linears
from sweep.export.checkpoint import WEIGHTS_FILE, write_checkpoint
from sweep.export.recipe import recipe
from sweep.loaded_model import storage_dtype
from sweep.metrics import packed_linear_bytes
from sweep.model import load_model

from ..helpers import REPO

MODEL_DIR = REPO / "sweep/demo/model"
FORMAT_NAMES = {"fp8": "float-quantized", "nvfp4": "nvfp4-pack-quantized",
                "mxfp4": "mxfp4-pack-quantized"}  # fmt: skip
TENSORS = {
    "fp8": {"weight": torch.float8_e4m3fn, "weight_scale": torch.bfloat16},
    "nvfp4": {"weight_packed": torch.uint8, "weight_scale": torch.float8_e4m3fn,
              "weight_global_scale": torch.float32},
    "mxfp4": {"weight_packed": torch.uint8, "weight_scale": torch.uint8},
}  # fmt: skip


def _compressed(
    config: CompressionConfig,
    out: Path,
    dtype: torch.dtype | None = None,
    calibration=None,
    model_dir: Path = MODEL_DIR,
):
    model, tokenizer = load_model(model_dir, dtype="auto", device="cpu")
    dtype = dtype or storage_dtype(model)
    with torch.no_grad():  # as LoadedModel holds it: every weight at the checkpoint's precision
        for p in model.parameters():
            p.copy_(p.to(dtype).float())
    result = compress_model(model, config, progress=False, record_grids=True, storage_dtype=dtype,
                            calibration=calibration)  # fmt: skip
    write_checkpoint(model, tokenizer, config, result.grids, out, dtype)
    model.compressed = result
    return model


def _calibration(samples: int = 4, seq_len: int = 32, model_dir: Path = MODEL_DIR):
    from sweep.calibration_data import calibration_batches
    from sweep.compress import Calibration
    from sweep.demo import CALIBRATION_FILE
    from sweep.spec import CalibrationSpec

    _, tokenizer = load_model(model_dir, device="cpu")
    spec = CalibrationSpec(path=CALIBRATION_FILE, samples=samples, seq_len=seq_len)
    return Calibration(calibration_batches(spec, tokenizer))


def _reloaded(out: Path):
    from transformers import AutoModelForCausalLM, CompressedTensorsConfig

    back = AutoModelForCausalLM.from_pretrained(
        out, quantization_config=CompressedTensorsConfig(run_compressed=False)
    ).eval()
    for p in back.parameters():  # decoded in the checkpoint's 16-bit dtype; evaluated in float32
        p.data = p.data.float()
    return back


def _logits(model, back, activations: str, input_scales=None):
    """Logits on fixed ids of the reloaded checkpoint ``back``, and of ``model`` without and with
    its activations quantized as a trial evaluates them."""
    from sweep.compress.activations import quantized_activations

    ids = torch.randint(
        0, model.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        reloaded = back(ids).logits
        plain = model(ids).logits
        with quantized_activations(model, activations, input_scales):
            evaluated = model(ids).logits
    return reloaded, plain, evaluated


@pytest.mark.parametrize("fmt", ["fp8", "nvfp4", "mxfp4"])
@pytest.mark.parametrize("sparsity", [0.0, 0.5])
def test_a_float_checkpoint_holds_its_format_and_reloads_to_the_evaluated_logits(
    tmp_path: Path, fmt: str, sparsity: float
):
    config = CompressionConfig(format=fmt, sparsity=sparsity, prune_method="magnitude")
    model = _compressed(config, tmp_path)

    qconfig = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    assert qconfig["format"] == FORMAT_NAMES[fmt]
    weights = qconfig["config_groups"]["group_0"]["weights"]
    assert (weights["type"], weights["num_bits"], weights["group_size"]) == (
        "float", config.bits, config.group_size,
    )  # fmt: skip
    with safe_open(tmp_path / WEIGHTS_FILE, "pt") as f:
        for name, layer in compressible_linears(model).items():
            tensors = {k.removeprefix(f"{name}."): f.get_tensor(k)
                       for k in f.keys() if k.startswith(f"{name}.")}  # fmt: skip  # noqa: SIM118
            assert {k: t.dtype for k, t in tensors.items()} == TENSORS[fmt], name
            rows, cols = layer.weight.shape
            stored = sum(t.numel() * t.element_size() for t in tensors.values())
            assert stored == packed_linear_bytes(rows, cols, config.bits, config.group_size,
                                                 True, fmt)  # fmt: skip

    back = _reloaded(tmp_path)
    for name, layer in compressible_linears(model).items():
        assert torch.equal(back.get_submodule(name).weight, layer.weight), name
        if sparsity:
            assert (layer.weight == 0).float().mean() >= 0.5  # pruned weights stay zeros
    ids = torch.randint(
        0, model.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        assert torch.allclose(back(ids).logits, model(ids).logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("fmt", ["fp8", "nvfp4"])
def test_a_float16_checkpoint_decodes_to_the_evaluated_weights(tmp_path: Path, fmt: str):
    """The fp4 formats decode through bfloat16 before float16; fp8 straight into float16."""
    model = _compressed(CompressionConfig(format=fmt), tmp_path, torch.float16)
    back = _reloaded(tmp_path)
    for name, layer in compressible_linears(model).items():
        assert torch.equal(back.get_submodule(name).weight, layer.weight), name


def test_the_recipe_names_llm_compressors_schemes():
    stage = recipe(CompressionConfig(format="nvfp4", quant_method="gptq"))
    modifiers = json.dumps(stage)
    assert '"scheme": "NVFP4A16"' in modifiers and "GPTQModifier" in modifiers
    assert '"scheme": "MXFP4A16"' in json.dumps(recipe(CompressionConfig(format="mxfp4")))
    fp8 = json.dumps(recipe(CompressionConfig(format="fp8")))
    assert '"type": "float"' in fp8 and '"num_bits": 8' in fp8 and '"strategy": "channel"' in fp8


def test_fp8_with_dynamic_activations_reloads_to_the_logits_evaluated_with_them(tmp_path: Path):

    config = CompressionConfig(format="fp8", activations="fp8_dynamic")
    model = _compressed(config, tmp_path)
    qconfig = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    acts = qconfig["config_groups"]["group_0"]["input_activations"]
    assert (acts["type"], acts["num_bits"], acts["strategy"], acts["dynamic"]) == (
        "float", 8, "token", True,
    )  # fmt: skip
    reloaded, plain, evaluated = _logits(model, _reloaded(tmp_path), "fp8_dynamic")
    assert not torch.allclose(reloaded, plain, atol=1e-4, rtol=0)  # the reload quantizes inputs
    assert torch.allclose(reloaded, evaluated, atol=1e-4, rtol=0)
    assert "FP8_DYNAMIC" in json.dumps(recipe(config))


def test_nvfp4_weights_and_activations_reload_to_the_logits_evaluated_with_them(tmp_path: Path):

    config = CompressionConfig(format="nvfp4", activations="nvfp4")
    with pytest.raises(ValueError, match="nvfp4 activations are calibrated"):
        _compressed(config, tmp_path / "none")
    model = _compressed(config, tmp_path, calibration=_calibration())
    scales = model.compressed.input_scales
    assert set(scales) == set(compressible_linears(model))
    qconfig = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    acts = qconfig["config_groups"]["group_0"]["input_activations"]
    assert (acts["type"], acts["num_bits"], acts["strategy"], acts["group_size"], acts["dynamic"]
            ) == ("float", 4, "tensor_group", 16, "local")  # fmt: skip
    with safe_open(tmp_path / WEIGHTS_FILE, "pt") as f:
        for name in scales:
            assert float(f.get_tensor(f"{name}.input_global_scale")) == pytest.approx(scales[name])
    reloaded, plain, evaluated = _logits(model, _reloaded(tmp_path), "nvfp4", scales)
    assert not torch.allclose(reloaded, plain, atol=1e-3, rtol=0)  # the reload quantizes inputs
    assert torch.allclose(reloaded, evaluated, atol=1e-4, rtol=0)
    assert '"scheme": "NVFP4"' in json.dumps(recipe(config))


@pytest.mark.parametrize("method", ["rtn", "gptq"])
def test_layers_vllm_fuses_share_one_nvfp4_tensor_scale_and_others_keep_their_own(
    tmp_path: Path, method: str
):
    from sweep.compress.fused import shared_input_groups

    config = CompressionConfig(format="nvfp4", quant_method=method)
    base, _ = load_model(MODEL_DIR, dtype="auto", device="cpu")
    groups = shared_input_groups(base)
    layers = base.config.num_hidden_layers
    assert sorted(len(g) for g in groups) == [2] * layers + [3] * layers  # gate/up, q/k/v
    amax = {n: float(layer.weight.abs().max()) for n, layer in compressible_linears(base).items()}
    _compressed(config, tmp_path, calibration=_calibration() if method == "gptq" else None)

    with safe_open(tmp_path / WEIGHTS_FILE, "pt") as f:
        stored = {k.removesuffix(".weight_global_scale"): float(f.get_tensor(k))
                  for k in f.keys() if k.endswith(".weight_global_scale")}  # fmt: skip  # noqa: SIM118
    assert set(stored) == set(amax)
    fused = {n for g in groups for n in g}
    for group in groups:  # one scale, fitted on the group's largest weight
        assert len({stored[n] for n in group}) == 1
        assert stored[group[0]] == pytest.approx(448 * 6 / max(amax[n] for n in group))
    alone = [n for n in amax if n not in fused]
    assert alone and all(stored[n] == pytest.approx(448 * 6 / amax[n]) for n in alone)
    assert len({stored[n] for n in amax}) > len(groups)  # not one scale for the whole model
