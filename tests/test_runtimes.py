"""The runtime table's claims that this machine can check: what transformers holds in memory
when it loads an export (measured here, not assumed), and the documentation holding the table."""

from pathlib import Path

import pytest
import torch

from sweep.compress import CompressionConfig, compress_model
from sweep.compress.blocks import compressible_linears
from sweep.compress.fused import fused_groups
from sweep.demo import MODEL_DIR
from sweep.deployment import Layout, assess, layer_widths
from sweep.export.checkpoint import write_checkpoint
from sweep.loaded_model import storage_dtype
from sweep.metrics import packed_linear_bytes
from sweep.model import load_model, tensor_inventory
from sweep.runtimes import RUNTIMES, markdown_table
from sweep.spec import DeploySpec

pytestmark = pytest.mark.usefixtures("one_thread")


def _bytes(module: torch.nn.Module) -> int:
    tensors = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
    return sum(t.numel() * t.element_size() for t in tensors)


@pytest.mark.parametrize("bits,group_size,symmetric", [(4, 128, False), (3, None, True)])
def test_transformers_holds_the_packed_checkpoint_as_its_table_says(
    tmp_path: Path, bits, group_size, symmetric
):
    from transformers import AutoModelForCausalLM

    model, tokenizer = load_model(MODEL_DIR, dtype="auto", device="cpu")
    dtype = storage_dtype(model)
    config = CompressionConfig(bits=bits, group_size=group_size, symmetric=symmetric)
    result = compress_model(model, config, progress=False, record_grids=True, storage_dtype=dtype)
    out = write_checkpoint(model, tokenizer, config, result.grids, tmp_path, dtype)

    loaded = AutoModelForCausalLM.from_pretrained(out)  # as a user loads it: its own dtype
    linears = compressible_linears(loaded)
    for name, layer in linears.items():
        held = {n for n, _ in layer.named_buffers()} | {n for n, _ in layer.named_parameters()}
        assert "weight_packed" in held and "weight" not in held, name  # packed, not decompressed
        rows, cols = model.get_submodule(name).weight.shape
        assert _bytes(layer) == packed_linear_bytes(rows, cols, bits, group_size, symmetric)
    assert RUNTIMES["transformers"].holds == "packed"

    layout = Layout(tensor_inventory(model), fused_groups(model))
    verdict = assess(config, layer_widths(config, None, layout), layout,
                     DeploySpec(runtime="transformers"))  # fmt: skip
    # every weight it holds (a tied weight once), and the packed tensors of the quantized layers;
    # the rotary embedding's inv_freq, computed from the config, is no weight
    weights = sum(p.numel() * p.element_size() for p in loaded.parameters())
    packed = sum(b.numel() * b.element_size() for m in linears.values() for b in m.buffers())
    assert weights + packed == verdict.held_bytes


def test_the_deployment_page_holds_the_runtime_table():
    page = (Path(__file__).parents[1] / "docs" / "deployment.md").read_text()
    assert markdown_table() in page
