"""The exported checkpoint loads with ``from_pretrained``, gives the logits of the compressed model
that was evaluated, and is as large as the real compression ratio says."""

import json

import pytest
import torch
from safetensors import safe_open

from sweep.calibration_data import calibration_batches
from sweep.compress import Calibration, CalibrationCache, CompressionConfig, compress_model
from sweep.compress.blocks import compressible_linears
from sweep.compress.fused import fused_groups
from sweep.demo import CALIBRATION_FILE, MODEL_DIR
from sweep.deployment import Layout, assess, checkpoint_widths
from sweep.evaluation.harness import Scores
from sweep.evaluation.measurement import BaseReference, measure
from sweep.export.bundle import ExportError
from sweep.export.checkpoint import WEIGHTS_FILE, write_checkpoint
from sweep.loaded_model import storage_dtype
from sweep.metrics import packed_linear_bytes, real_compression_ratio
from sweep.model import WeightSnapshot, load_model, tensor_inventory
from sweep.spec import CalibrationSpec, DeploySpec

pytestmark = pytest.mark.usefixtures("one_thread")

LOGITS_TOLERANCE = 1e-4
DEPLOY_TARGETS = (DeploySpec(runtime="vllm", gpu="9.0"), DeploySpec(runtime="transformers"))
SIZE_TOLERANCE = 0.05

CONFIGS = {
    "gptq-w4-g128-asym": CompressionConfig(bits=4, group_size=128, quant_method="gptq"),
    "rtn-w3-ch-sym": CompressionConfig(bits=3, group_size=None, symmetric=True),
    "sparsegpt-2:4-then-gptq-w4-caseB": CompressionConfig(
        pattern="2:4", prune_method="sparsegpt", bits=4, quant_method="gptq", case="B"
    ),
    "joint-sparsegpt-50-w4": CompressionConfig(
        sparsity=0.5, prune_method="sparsegpt", bits=4, group_size=64, order="joint"
    ),
    "rtn-w8-g64": CompressionConfig(bits=8, group_size=64),
    "rtn-w2-g32": CompressionConfig(bits=2, group_size=32),
    "owl-wanda-50-w4": CompressionConfig(
        sparsity=0.5, prune_method="wanda", profile="owl", bits=4, group_size=128
    ),
    "magnitude-50-w16": CompressionConfig(sparsity=0.5),
    "sparsegpt-50-w16": CompressionConfig(sparsity=0.5, prune_method="sparsegpt"),
}


class Demo:
    """The demo model loaded once, restored before each compression."""

    def __init__(self) -> None:
        self.model, self.tokenizer = load_model(MODEL_DIR, dtype="auto", device="cpu")
        self.snapshot = WeightSnapshot(self.model)
        self.inventory = tensor_inventory(self.model)
        spec = CalibrationSpec(path=CALIBRATION_FILE, samples=16, seq_len=64)
        tokens = calibration_batches(spec, self.tokenizer)
        self.calibration, self.probe = tokens[:12], tokens[12:]  # (12, 64), (4, 64)
        self.cache = CalibrationCache()
        self.dtype = storage_dtype(self.model)

    def compress(self, config: CompressionConfig):
        self.snapshot.restore()
        return compress_model(
            self.model,
            config,
            progress=False,
            calibration=Calibration(self.calibration, cache=self.cache),
            record_grids=True,
            storage_dtype=self.dtype,
        )


@pytest.fixture(scope="module")
def demo():
    return Demo()


def written_verdict(out, demo: Demo, config: CompressionConfig, target: DeploySpec):
    """The runtime's verdict on the checkpoint in ``out``, from its config.json's groups."""
    layout = Layout(demo.inventory, fused_groups(demo.model))
    data = json.loads((out / "config.json").read_text())
    widths = checkpoint_widths(data.get("quantization_config", {}), layout)
    return assess(config, widths, layout, target)


def test_checkpoint_dtype_is_the_demo_checkpoints(demo):
    assert demo.model.dtype == torch.float32  # loaded in float32 on the CPU
    assert demo.dtype == torch.bfloat16  # the dtype of sweep/demo/model's checkpoint


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_reload_gives_the_evaluated_logits_and_the_measured_size(demo, config, tmp_path):
    from transformers import AutoModelForCausalLM

    result = demo.compress(config)
    out = write_checkpoint(demo.model, demo.tokenizer, config, result.grids, tmp_path, demo.dtype)
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert hasattr(reloaded.config, "quantization_config") == config.quantizes
    with torch.no_grad():
        expected = demo.model(demo.probe).logits
        got = reloaded(demo.probe).logits
    assert float((got - expected).abs().max()) <= LOGITS_TOLERANCE

    base_bytes = sum(t.rows * t.cols * 2 for t in demo.inventory)
    ratio = real_compression_ratio(demo.inventory, config.bits, config.group_size, config.symmetric)
    size = (out / WEIGHTS_FILE).stat().st_size
    assert size == pytest.approx(base_bytes / ratio, rel=SIZE_TOLERANCE)
    for target in DEPLOY_TARGETS:  # what was written, as each runtime reads it
        served = written_verdict(out, demo, config, target)
        assert served.deployable, (target, served.reason)
        assert served.ratio == ratio  # both hold the packed checkpoint; sparsity saves nothing

    # the metric counts exactly the tensors written for each Linear (the file adds its header)
    with safe_open(out / WEIGHTS_FILE, "pt") as f:
        keys = f.keys()
        for name, layer in compressible_linears(demo.model).items():
            stored = [k for k in keys if k.rsplit(".", 1)[0] == name and "weight" in k]
            written = sum(f.get_tensor(k).nbytes for k in stored)
            rows, cols = layer.weight.shape
            claimed = packed_linear_bytes(rows, cols, config.bits, config.group_size,
                                          config.symmetric)  # fmt: skip
            assert written == claimed, name


def test_gptq_in_activation_order_reloads_and_only_vllm_refuses_it(demo, tmp_path):
    from transformers import AutoModelForCausalLM

    config = CompressionConfig(bits=4, group_size=128, quant_method="gptq", act_order=True)
    result = demo.compress(config)
    out = write_checkpoint(demo.model, demo.tokenizer, config, result.grids, tmp_path, demo.dtype)
    groups = json.loads((out / "config.json").read_text())["quantization_config"]["config_groups"]
    assert {g["weights"]["actorder"] for g in groups.values()} == {"weight"}
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        gap = reloaded(demo.probe).logits - demo.model(demo.probe).logits
    assert float(gap.abs().max()) <= LOGITS_TOLERANCE
    vllm, transformers = (written_verdict(out, demo, config, t) for t in DEPLOY_TARGETS)
    assert not vllm.deployable and "order" in vllm.reason
    assert transformers.deployable


def test_checkpoint_without_grids_is_refused(demo, tmp_path):
    config = CompressionConfig(bits=4, group_size=128)
    demo.compress(config)
    with pytest.raises(ExportError, match="record_grids=True"):
        write_checkpoint(demo.model, demo.tokenizer, config, {}, tmp_path, demo.dtype)


def test_weights_off_their_grid_are_refused(demo, tmp_path):
    config = CompressionConfig(bits=4, group_size=128)
    grids = demo.compress(config).grids
    demo.snapshot.restore()  # the base weights are not on the grids
    with pytest.raises(ExportError, match="not on its recorded grid"):
        write_checkpoint(demo.model, demo.tokenizer, config, grids, tmp_path, demo.dtype)


def test_group_size_that_does_not_divide_the_input_is_refused(demo, tmp_path):
    config = CompressionConfig(bits=4, group_size=96)  # 256 input features: 2 groups and a bit
    grids = demo.compress(config).grids
    with pytest.raises(ExportError, match="multiple of the group size"):
        write_checkpoint(demo.model, demo.tokenizer, config, grids, tmp_path, demo.dtype)


def test_mixed_allocation_reloads_exactly_and_weighs_what_its_ratio_says(demo, tmp_path):
    from transformers import AutoModelForCausalLM

    config = CompressionConfig(
        sparsity=0.25, prune_method="wanda", profile="owl", owl_lambda=0.1, bits=3,
        quant_method="gptq", group_size=64, allocation="mixed",
    )  # fmt: skip
    result = demo.compress(config)
    widths = sorted(set(result.bits.values()))
    assert len(widths) >= 2 and len(set(result.layers.values())) >= 2  # layers really differ
    out = write_checkpoint(demo.model, demo.tokenizer, config, result.grids, tmp_path, demo.dtype)

    groups = json.loads((out / "config.json").read_text())["quantization_config"]["config_groups"]
    assert [groups[g]["weights"]["num_bits"] for g in sorted(groups)] == widths
    for g in groups.values():
        assert all(result.bits[name] == g["weights"]["num_bits"] for name in g["targets"])
    assert sum(len(g["targets"]) for g in groups.values()) == len(result.bits)
    fused = fused_groups(demo.model)
    assert len(fused) == 16
    written = checkpoint_widths({"config_groups": groups}, Layout(demo.inventory, fused))
    assert sum(len({written[n] for n in g}) > 1 for g in fused) == 0  # no fused group split
    for target in DEPLOY_TARGETS:
        assert written_verdict(out, demo, config, target).deployable

    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        expected = demo.model(demo.probe).logits
        got = reloaded(demo.probe).logits
    assert float((got - expected).abs().max()) <= LOGITS_TOLERANCE

    base_bytes = sum(t.rows * t.cols * 2 for t in demo.inventory)
    bits = {f"{name}.weight": b for name, b in result.bits.items()}
    ratio = real_compression_ratio(demo.inventory, bits, config.group_size, config.symmetric)
    m = measure(config, result, Scores({"t": 0.6}, None), BaseReference({"t": 0.8}, {"t": 0.25}),
                demo.inventory, {})  # fmt: skip
    assert m.real_ratio == pytest.approx(ratio, rel=1e-12)
    sizes = {n: layer.weight.numel() for n, layer in compressible_linears(demo.model).items()}
    kept_bits = sum(sizes[n] * (1 - result.layers[n]) * result.bits[n] for n in sizes)
    assert m.tcr == pytest.approx(1 - kept_bits / (16 * sum(sizes.values())), abs=1e-12)
    size = (out / WEIGHTS_FILE).stat().st_size
    with open(out / WEIGHTS_FILE, "rb") as f:
        header = 8 + int.from_bytes(f.read(8), "little")  # names and shapes: ~100 bytes a tensor
    assert size - header == pytest.approx(base_bytes / ratio, rel=1e-6)
