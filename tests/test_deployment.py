"""Each rule of the runtime table (``sweep.runtimes``), one test per rule, each naming the line of
the runtime's source it mirrors; and the verdict a trial carries: deployable, why, and what the
runtime holds."""

import pytest

from sweep.compress import CompressionConfig
from sweep.deployment import Layout, assess, checkpoint_widths, judged, layer_widths
from sweep.evaluation.measurement import Measurement
from sweep.metrics import Tensor2D, real_compression_ratio
from sweep.runtimes import RUNTIMES
from sweep.spec import DeploySpec

BLOCK = "model.layers.0"
ATTN = [f"{BLOCK}.self_attn.{p}_proj" for p in ("q", "k", "v")]
MLP = [f"{BLOCK}.mlp.{p}_proj" for p in ("gate", "up")]
LAYERS = [*ATTN, f"{BLOCK}.self_attn.o_proj", *MLP, f"{BLOCK}.mlp.down_proj"]
LAYOUT = Layout(
    inventory=[Tensor2D("model.embed_tokens.weight", 512, 256, False)]
    + [Tensor2D(f"{n}.weight", 256, 256, True) for n in LAYERS],
    fused=[ATTN, MLP],
)
VLLM_A100 = DeploySpec(runtime="vllm", gpu="8.0")
TRANSFORMERS = DeploySpec(runtime="transformers")


def uniform(config: CompressionConfig) -> dict[str, int]:
    return layer_widths(config, None, LAYOUT)


def verdict(config: CompressionConfig, target: DeploySpec = VLLM_A100, widths=None):
    return assess(config, uniform(config) if widths is None else widths, LAYOUT, target)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group_size", [None, 32, 64, 128])
@pytest.mark.parametrize("symmetric", [True, False])
def test_vllm_serves_int_weights_of_2_to_8_bits_on_any_grid(bits, group_size, symmetric):
    # compressed_tensors_wNa16.py: WNA16_SUPPORTED_BITS (uint2b2 ... uint8b128, and zero
    # points for asymmetric grids); group or channel strategy
    rule = RUNTIMES["vllm"].weights[0]
    assert "WNA16_SUPPORTED_BITS" in rule.source
    config = CompressionConfig(bits=bits, group_size=group_size, symmetric=symmetric)
    v = verdict(config)
    assert v.deployable, v.reason
    assert (
        v.reason == f"served as W{bits}A16 {'channel' if group_size is None else f'g{group_size}'}"
    )


def test_vllm_needs_compute_capability_7_5_for_integer_weights():
    # compressed_tensors_wNa16.py: get_min_capability() returns 75 ("Turing and up")
    assert "get_min_capability() returns 75" in RUNTIMES["vllm"].weights[0].source
    config = CompressionConfig(bits=4)
    assert verdict(config, DeploySpec(runtime="vllm", gpu="7.5")).deployable
    v = verdict(config, DeploySpec(runtime="vllm", gpu="7.0"))
    assert not v.deployable
    assert v.reason == "W4A16: vllm needs compute capability 7.5, the target GPU is 7.0"


def test_vllm_serves_16_bit_weights_on_any_gpu():
    v = verdict(CompressionConfig(), DeploySpec(runtime="vllm", gpu="7.0"))
    assert v.deployable and v.reason == "served dense in 16 bits"
    assert v.ratio == pytest.approx(1.0)


def test_vllm_refuses_fused_layers_at_different_widths_naming_them():
    # compressed_tensors/utils.py should_ignore_layer: "Found different quantization schemes
    # for the shards of {layer_name}. vLLM requires all to use the same scheme."
    assert "vLLM requires all to use the same scheme" in RUNTIMES["vllm"].fused_source
    config = CompressionConfig(bits=3, allocation="mixed", quant_method="gptq")
    widths = dict.fromkeys(LAYERS, 3) | {ATTN[1]: 4, ATTN[2]: 4}
    v = verdict(config, widths=widths)
    assert not v.deployable
    assert v.reason == (
        "model.layers.0.self_attn: q_proj 3 bits, k_proj 4 bits: vllm needs one scheme for q/k/v"
    )
    widths[MLP[0]] = 16  # a shard left unquantized beside a quantized one: the same refusal
    v = verdict(config, widths=widths)
    assert "(2 of 2 fused groups split)" in v.reason


def test_vllm_stores_no_sparsity_so_2_4_with_4_bits_holds_what_4_bits_alone_holds():
    # vLLM PR #36799 ("Sparse24 models are no longer supported"); compressed_tensors.py:
    # "Sparsity support has been removed from compressed-tensors"
    assert "Sparse24 models are no longer supported" in RUNTIMES["vllm"].sparse_source
    assert RUNTIMES["vllm"].sparse_formats == ()
    four = verdict(CompressionConfig(bits=4))
    sparse = verdict(CompressionConfig(pattern="2:4", prune_method="sparsegpt", bits=4))
    assert sparse.deployable
    assert sparse.ratio == four.ratio
    assert (
        sparse.reason == "2:4 sparsity: vllm serves it dense, no bytes saved; served as W4A16 g128"
    )
    pruned = verdict(CompressionConfig(sparsity=0.5))
    assert pruned.ratio == pytest.approx(1.0)
    assert pruned.reason.startswith("50% sparsity: vllm serves it dense, no bytes saved")


def test_vllm_refuses_activation_order():
    # compressed_tensors.py: "Compressed-tensors group/dynamic activation ordering
    # (actorder=...) is no longer supported"
    assert "activation ordering" in RUNTIMES["vllm"].act_order_source
    v = verdict(CompressionConfig(bits=4, quant_method="gptq", act_order=True))
    assert not v.deployable and v.reason == "activation order: vllm no longer serves it"
    assert verdict(CompressionConfig(bits=4, quant_method="gptq", act_order=True),
                   TRANSFORMERS).deployable  # fmt: skip


def test_transformers_runs_each_linear_on_its_own_on_any_device():
    config = CompressionConfig(bits=3, allocation="mixed", quant_method="gptq")
    widths = dict.fromkeys(LAYERS, 3) | {ATTN[1]: 4}
    v = verdict(config, TRANSFORMERS, widths)
    assert v.deployable, v.reason
    assert RUNTIMES["transformers"].weights[0].min_capability is None
    assert not RUNTIMES["transformers"].needs_gpu


def test_deploy_ratio_counts_scales_and_zero_points_as_written():
    config = CompressionConfig(bits=4, group_size=64)
    v = verdict(config)
    expected = real_compression_ratio(LAYOUT.inventory, 4, 64, False)
    assert v.ratio == expected
    dense = sum(t.rows * t.cols * 2 for t in LAYOUT.inventory)
    assert v.held_bytes == round(dense / expected)
    # each 256 x 256 layer: 4-bit codes (32 int32 words a row), a 16-bit scale per row and group
    # of 64, 4-bit zero points packed along the rows (32 words per group), a 2 x int64 shape
    layer = 256 * 32 * 4 + 256 * 4 * 2 + 32 * 4 * 4 + 16
    assert v.held_bytes == 512 * 256 * 2 + 7 * layer


def test_judged_is_none_without_a_runtime_and_fills_the_three_fields_with_one():
    m = Measurement(0.0, 0.0, 0.75, 3.5, 0.9, 1.8, None, {"t": 0.5})
    config = CompressionConfig(bits=4)
    none = judged(m, config, LAYOUT, DeploySpec())
    assert (none.deployable, none.deploy_reason, none.deploy_ratio) == (None, None, None)
    vllm = judged(m, config, LAYOUT, VLLM_A100)
    assert vllm.deployable is True and vllm.deploy_reason == "served as W4A16 g128"
    assert vllm.deploy_ratio == verdict(config).ratio


def test_checkpoint_widths_read_groups_by_name_then_linear_and_the_ignore_list():
    qc = {
        "config_groups": {
            "group_0": {"targets": ATTN, "weights": {"num_bits": 3}},
            "group_1": {"targets": ["Linear"], "weights": {"num_bits": 4}},
        },
        "ignore": ["lm_head", LAYERS[-1]],
    }
    widths = checkpoint_widths(qc, LAYOUT)
    assert [widths[n] for n in ATTN] == [3, 3, 3]
    assert widths[MLP[0]] == 4 and widths[LAYERS[-1]] == 16


# --- a study with a deploy target, end to end on the toy model ----------------------------------


@pytest.fixture(scope="module")
def turing_study(toy_dir, tmp_path_factory):
    """The toy on a Volta GPU (7.0), where vLLM serves no integer weights: 16-bit trials are
    served, 4-bit ones refused."""
    import yaml

    from tests.helpers import run_spec
    from tests.toy import toy_spec

    folder = tmp_path_factory.mktemp("deploy")
    path = toy_spec(toy_dir, "volta", sparsity={"values": [0.0, 0.5]}, bits=[4, 16],
                    orders=["prune_first"])  # fmt: skip
    spec = yaml.safe_load(path.read_text())
    spec["sampler"] = {"name": "grid", "seed": 0}
    spec["deploy"] = {"runtime": "vllm", "gpu": "7.0"}
    spec["evaluation"]["stages"] = {"mode": "off"}  # a refused trial measured in full, to export
    url, done = run_spec(spec, folder, "--trials", "4")
    return url, folder, done


@pytest.mark.slow
def test_a_refused_trial_is_stored_infeasible_with_its_reason(turing_study):
    import optuna
    from optuna.trial import TrialState

    from sweep.report import front, trials_frame

    url, _, done = turing_study
    study = optuna.load_study(study_name="volta", storage=url)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 4
    for t in trials:
        bits = t.user_attrs["config"]["bits"]
        assert t.user_attrs["deployable"] is (bits == 16)
        assert t.constraints["deployable"] == (0.0 if bits == 16 else 1.0)
        if bits == 4:
            assert t.user_attrs["deploy_reason"].startswith(
                "W4A16: vllm needs compute capability 7.5, the target GPU is 7.0"
            )
        assert t.user_attrs["deploy_ratio"] > 0
    assert "not deployable" in done.stdout
    frame = trials_frame(study)
    assert set(frame["bits"][frame["deployable"]]) == {16}
    for x in ("tcr", "deploy_ratio"):
        assert set(front(frame, x, "srcr")["bits"]) == {16}
    assert {t.user_attrs["config"]["bits"] for t in study.best_trials} == {16}


def test_export_refuses_a_refused_trial_unless_forced(turing_study):
    import optuna
    import yaml

    from tests.helpers import sweep

    url, folder, _ = turing_study
    study = optuna.load_study(study_name="volta", storage=url)
    four = next(t for t in study.trials if t.user_attrs.get("config", {}).get("bits") == 4)
    args = ("export", "--storage", url, "--study-name", "volta", "--no-progress")
    refused = sweep(*args, "--trial", str(four.number), "--out", str(folder / "x"), cwd=folder)
    assert refused.returncode == 2
    said = " ".join(refused.stderr.split())
    assert f"trial {four.number} of 'volta'" in said
    assert "cannot be served by vllm on compute capability 7.0: W4A16" in said
    assert "--force" in said and not (folder / "x").exists()

    forced = sweep(*args, "--trial", str(four.number), "--out", str(folder / "x"), "--force",
                   cwd=folder)  # fmt: skip
    assert forced.returncode == 0, forced.stderr
    card = (folder / "x" / "README.md").read_text()
    assert "**Exported with --force: vllm refuses this checkpoint**" in card
    assert "| deployable | **no** |" in card
    fragment = yaml.safe_load((folder / "x" / "sweep-trial.yaml").read_text())
    assert fragment["deploy"]["runtime"] == "none"  # so that `sweep compress` reads it back

    default = sweep(*args, "--out", str(folder / "best"), cwd=folder)  # the best feasible trial
    assert default.returncode == 0, default.stderr
    card = (folder / "best" / "README.md").read_text()
    assert (
        "| deployable | yes |" in card and "| runtime | vLLM 0.34, compute capability 7.0 |" in card
    )


def test_the_report_draws_both_fronts_and_the_csv_holds_the_verdicts(turing_study):
    import pandas as pd

    from tests.helpers import sweep

    url, folder, _ = turing_study
    out = folder / "report"
    done = sweep("report", "--storage", url, "--study-name", "volta", "--out", str(out),
                 "--no-png", cwd=folder)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Pareto front: srcr against deploy_ratio" in done.stdout
    html = (out / "pareto-deploy.html").read_text()
    assert "deploy ratio (16-bit bytes" in html and "TCr (theoretical compression rate)" in html
    csv = pd.read_csv(out / "trials.csv")
    assert {"deployable", "deploy_reason", "deploy_ratio"} <= set(csv.columns)
    assert csv["deploy_reason"].notna().all()


@pytest.mark.slow
def test_without_a_runtime_trials_carry_no_verdict(toy_dir, tmp_path):
    import optuna
    import yaml

    from tests.helpers import run_spec
    from tests.toy import toy_spec

    path = toy_spec(toy_dir, "theory", sparsity={"values": [0.0]}, bits=[4])
    spec = yaml.safe_load(path.read_text())
    url, done = run_spec(spec, tmp_path, "--trials", "1")
    (trial,) = optuna.load_study(study_name="theory", storage=url).trials
    assert trial.user_attrs["deployable"] is None and trial.user_attrs["deploy_ratio"] is None
    assert "deployable" not in trial.constraints
    assert "deploy" not in done.stdout


@pytest.mark.slow
def test_staged_evaluation_stops_a_refused_trial_after_its_sample(toy_dir, tmp_path):
    import optuna
    import yaml

    from tests.helpers import run_spec
    from tests.toy import toy_spec

    path = toy_spec(toy_dir, "volta-staged", sparsity={"values": [0.0]}, bits=[4, 16])
    spec = yaml.safe_load(path.read_text())
    spec["deploy"] = {"runtime": "vllm", "gpu": "7.0"}
    spec["evaluation"]["stages"] = {"mode": "on"}
    spec["sampler"] = {"name": "grid", "seed": 0}
    url, _ = run_spec(spec, tmp_path, "--trials", "2")
    stages = {
        t.user_attrs["config"]["bits"]: t.user_attrs["stage"]
        for t in optuna.load_study(study_name="volta-staged", storage=url).trials
    }
    assert stages == {4: "sample", 16: "full"}  # infeasible: no Sr could put it on a front


@pytest.mark.slow
def test_deploy_ratio_can_be_an_objective(toy_dir, tmp_path):
    import optuna
    import yaml

    from tests.helpers import run_spec
    from tests.toy import toy_spec

    path = toy_spec(toy_dir, "served", sparsity={"values": [0.0, 0.5]}, bits=[4, 16])
    spec = yaml.safe_load(path.read_text())
    spec["deploy"] = {"runtime": "transformers"}
    spec["objectives"] = ["srcr", "deploy_ratio"]
    url, _ = run_spec(spec, tmp_path, "--trials", "2")
    study = optuna.load_study(study_name="served", storage=url)
    done = [t for t in study.trials if t.values]
    assert len(done) == 2
    for t in done:
        assert t.values == [t.user_attrs["srcr"], t.user_attrs["deploy_ratio"]]
        assert t.user_attrs["deployable"] is True


def test_fp8_activations_need_an_ada_gpu_and_fp8_weights_alone_an_ampere_one():
    from sweep.compress.fused import fused_groups
    from sweep.model import tensor_inventory

    from .compress.test_driver import tiny_llama

    model = tiny_llama()
    layout = Layout(tensor_inventory(model), fused_groups(model))
    w8a8 = CompressionConfig(format="fp8", activations="fp8_dynamic")
    w8a16 = CompressionConfig(format="fp8")

    def on(config, gpu):
        return assess(config, layer_widths(config, None, layout), layout,
                      DeploySpec(runtime="vllm", gpu=gpu))  # fmt: skip

    refused = on(w8a8, "8.0")
    assert not refused.deployable
    assert "FP8 W8A8: vllm needs compute capability 8.9" in refused.reason
    assert on(w8a8, "8.9").reason == "served as FP8 W8A8"
    assert on(w8a16, "8.0").reason == "served as FP8 W8A16"
    assert on(w8a8, "8.9").ratio == on(w8a16, "8.0").ratio  # the same bytes
