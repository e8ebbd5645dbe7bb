"""The table of search variables is the one definition: the configuration, the spec, the
sampler's questions and the listing of the space all follow it."""

from dataclasses import fields

import optuna
import pytest
from pydantic import ValidationError

from sweep.compress.config import CompressionConfig
from sweep.compress.variables import VARIABLES
from sweep.export.fragment import single_config_space
from sweep.space import all_configs, suggest_config
from sweep.spec import SearchSpace


def test_every_field_of_a_configuration_and_every_list_of_the_space_is_a_variable():
    assert {v.name for v in VARIABLES} == {f.name for f in fields(CompressionConfig)}
    lists = set(SearchSpace.model_fields) - {"first", "max_configurations"}
    assert {v.spec_list for v in VARIABLES} == lists
    defaults = CompressionConfig()
    assert {v.name: v.default for v in VARIABLES} == defaults.to_dict()


def _suggested(space: SearchSpace) -> set[CompressionConfig]:
    """What suggest_config returns over the whole space: optuna's brute-force sampler tries
    every answer to every question a trial asks, conditional questions included."""
    study = optuna.create_study(sampler=optuna.samplers.BruteForceSampler(seed=0))
    seen = set()
    study.optimize(lambda t: seen.add(suggest_config(t, space).canonical()) or 0.0, n_trials=2000)
    return seen


@pytest.mark.parametrize(
    "lists",
    [
        {"sparsity": {"values": [0.0, 0.5]}, "patterns": ["unstructured", "2:4"],
         "prune_methods": ["magnitude", "sparsegpt"], "quant_methods": ["rtn", "gptq"],
         "bits": [4, 16], "orders": ["prune_first", "joint"], "cases": ["A", "B"],
         "act_orders": [False, True]},
        # mixed is asked only where it acts: at 2 and 16 bits the configuration is uniform
        {"sparsity": {"values": [0.0, 0.25]}, "profiles": ["uniform", "owl"],
         "owl_lambdas": [0.04, 0.08], "bits": [2, 3, 16], "allocations": ["mixed"],
         "group_sizes": [32, None]},
        # a float format fixes its bits and grid, and takes no mixed allocation
        {"sparsity": {"values": [0.0, 0.5]}, "formats": ["int", "fp8", "nvfp4", "mxfp4"],
         "activations": ["none", "fp8_dynamic", "nvfp4"],
         "bits": [3, 16], "group_sizes": [64, None], "allocations": ["uniform", "mixed"],
         "quant_methods": ["rtn", "gptq"], "orders": ["prune_first", "joint"],
         "prune_methods": ["sparsegpt"]},
    ],
)  # fmt: skip
def test_the_space_lists_exactly_what_the_sampler_can_return(lists):
    space = SearchSpace(**lists)
    listed = all_configs(space)
    assert listed == _suggested(space)
    assert space.size() == len(listed)


def test_act_order_is_a_variable_of_gptq_alone():
    space = SearchSpace(sparsity={"values": [0.0]}, bits=[4], quant_methods=["rtn", "gptq"],
                        act_orders=[False, True])  # fmt: skip
    keys = sorted(c.key() for c in all_configs(space))
    assert keys == ["gptq-w4-g128-asym", "gptq-w4-g128-asym-act", "rtn-w4-g128-asym"]
    assert CompressionConfig(bits=4, act_order=True).canonical().act_order is False  # rtn
    joint = CompressionConfig(sparsity=0.5, prune_method="sparsegpt", bits=4, order="joint",
                              quant_method="gptq", act_order=True)  # fmt: skip
    assert not joint.canonical().act_order  # the one-pass joint visits columns in its own order


def test_an_export_fragment_holds_the_one_configuration_it_was_made_from():
    config = CompressionConfig(
        sparsity=0.25,
        prune_method="wanda",
        bits=3,
        group_size=64,
        quant_method="gptq",
        act_order=True,
        order="quant_first",
    )
    assert all_configs(single_config_space(config)) == {config.canonical()}


@pytest.mark.parametrize(
    ("list_name", "value", "config_field", "message"),
    [
        ("owl_lambdas", 0.6, "owl_lambda", "OWL's lambda 0.6 must be in (0, 0.5)"),
        ("bits", 5, "bits", "unsupported bit-width 5; allowed: [2, 3, 4, 8, 16]"),
        ("quant_methods", "gtpq", "quant_method", "Did you mean 'gptq'?"),
        ("allocations", "greedy", "allocation", "unknown bit allocation 'greedy'"),
        ("formats", "fp4", "format", "unknown weight format 'fp4'"),
    ],
)
def test_the_spec_and_a_configuration_refuse_a_value_in_the_same_words(
    list_name, value, config_field, message
):
    with pytest.raises(ValidationError) as refused:
        SearchSpace(**{list_name: [value]})
    assert message in str(refused.value)
    with pytest.raises(ValueError, match=f"^{config_field}: .*{message[:12]}"):
        CompressionConfig(**{config_field: value})


def test_a_float_format_sets_its_own_bits_and_grid_and_names_itself():
    nvfp4 = CompressionConfig(format="nvfp4", bits=3, group_size=128, quant_method="gptq")
    assert (nvfp4.bits, nvfp4.group_size, nvfp4.symmetric) == (4, 16, True)
    assert nvfp4.key() == "gptq-nvfp4"
    assert CompressionConfig(format="fp8").key() == "rtn-fp8"
    assert (CompressionConfig(format="mxfp4").group_size, CompressionConfig(format="fp8").bits) == (
        32,
        8,
    )
    both = CompressionConfig(sparsity=0.5, prune_method="sparsegpt", format="mxfp4")
    assert both.key() == "sparsegpt-50% rtn-mxfp4 prune_first-caseB"
    assert CompressionConfig(format="int", bits=4).key() == "rtn-w4-g128-asym"  # as before
    with pytest.raises(ValueError, match="a mixed allocation spreads integer widths, not nvfp4"):
        CompressionConfig(format="nvfp4", allocation="mixed")
    space = SearchSpace(sparsity={"values": [0.0]}, formats=["fp8", "nvfp4"], bits=[2, 3])
    assert sorted(c.key() for c in all_configs(space)) == ["rtn-fp8", "rtn-nvfp4"]
    assert space.size() == 2
    both = SearchSpace(sparsity={"values": [0.0]}, formats=["fp8", "nvfp4"],
                       activations=["none", "fp8_dynamic"])  # fmt: skip
    keys = sorted(c.key() for c in all_configs(both))
    assert keys == ["rtn-fp8", "rtn-fp8-fp8_dynamic", "rtn-nvfp4"] and both.size() == 3
    with pytest.raises(ValueError, match="activations fp8_dynamic need a format that has them"):
        CompressionConfig(format="nvfp4", activations="fp8_dynamic")
    # each format its own activations, asked as a parameter of its own (Optuna keeps one set of
    # choices per parameter)
    each = SearchSpace(sparsity={"values": [0.0]}, formats=["fp8", "nvfp4", "mxfp4"],
                       activations=["fp8_dynamic", "nvfp4", "none"])  # fmt: skip
    keys = sorted(c.key() for c in all_configs(each))
    assert keys == ["rtn-fp8", "rtn-fp8-fp8_dynamic", "rtn-mxfp4", "rtn-nvfp4", "rtn-nvfp4-nvfp4"]
    assert each.size() == 5
    study = optuna.create_study(sampler=optuna.samplers.BruteForceSampler(seed=0))
    study.optimize(lambda t: float(len(suggest_config(t, each).key())), n_trials=5)
    params = sorted(sorted(t.params.items()) for t in study.trials)
    assert [("activations:nvfp4", "nvfp4"), ("format", "nvfp4")] in params
    assert [("activations:fp8", "none"), ("format", "fp8")] in params
    with pytest.raises(ValueError, match="give fp8 weights no choice"):
        SearchSpace(formats=["fp8", "nvfp4"], activations=["nvfp4"])
