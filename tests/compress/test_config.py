import pytest

from sweep.compress.config import CompressionConfig, parse_pattern


def test_nm_pattern_sets_the_sparsity():
    assert CompressionConfig(pattern="2:4").target_sparsity == 0.5
    assert CompressionConfig(pattern="2:8").target_sparsity == 0.75


@pytest.mark.parametrize("bad", ["4:2", "2:2", "0:4", "two:four", "2-4"])
def test_invalid_nm_patterns_are_refused(bad):
    with pytest.raises(ValueError, match="pattern|N:M"):
        parse_pattern(bad)


def test_configs_with_no_effect_fields_share_a_key():
    a = CompressionConfig(sparsity=0.0, bits=16, order="quant_first", case="A", group_size=64)
    assert a.key() == CompressionConfig().key() == "base"
    b = CompressionConfig(sparsity=0.3, bits=16, case="A")
    c = CompressionConfig(sparsity=0.3, bits=16, case="B", order="quant_first")
    assert b.key() == c.key()
    d = CompressionConfig(sparsity=0.3, bits=4, case="A")
    e = CompressionConfig(sparsity=0.3, bits=4, case="B")
    assert d.key() != e.key()


@pytest.mark.parametrize(
    "fields",
    [{"bits": 5}, {"sparsity": 1.0}, {"sparsity": -0.1}, {"order": "random"}, {"case": "C"}],
)
def test_bad_values_are_refused(fields):
    with pytest.raises(ValueError):
        CompressionConfig(**fields)


def test_joint_sparsegpt_configs_share_a_key_whatever_the_quantizer_name():
    common = dict(sparsity=0.5, prune_method="sparsegpt", bits=4, order="joint")
    a = CompressionConfig(**common, quant_method="rtn")
    b = CompressionConfig(**common, quant_method="gptq", act_order=True)
    assert a.key() == b.key() == "sparsegpt-50% gptq-w4-g128-asym joint"
    wanda = dict(common, prune_method="wanda")
    assert CompressionConfig(**wanda).key() != CompressionConfig(**wanda, quant_method="gptq").key()


def test_joint_order_without_a_one_pass_pruner_is_prune_first_case_b():
    joint = CompressionConfig(sparsity=0.5, prune_method="wanda", bits=4, order="joint", case="A")
    two_step = CompressionConfig(sparsity=0.5, prune_method="wanda", bits=4, case="B")
    assert joint.key() == two_step.key() == "wanda-50% rtn-w4-g128-asym prune_first-caseB"


def test_non_uniform_fields_without_effect_fall_away():
    owl = dict(sparsity=0.5, profile="owl", owl_lambda=0.05)
    assert CompressionConfig(**owl).key() == "magnitude-50%-owl-m5-l0.05"
    assert CompressionConfig(**owl).non_uniform
    assert CompressionConfig(sparsity=0.0, profile="owl").key() == "base"  # nothing to spread
    assert CompressionConfig(sparsity=0.5, owl_lambda=0.2).key() == "magnitude-50%"
    mixed = CompressionConfig(bits=3, allocation="mixed")
    assert mixed.key() == "rtn-mixed3-g128-asym" and mixed.non_uniform
    for ends in (2, 8):  # at the ends of the widths on offer every layer gets the budget
        assert not CompressionConfig(bits=ends, allocation="mixed").non_uniform
    one_layer = CompressionConfig(**owl, bits=3, allocation="mixed").for_layer(0.42, 4)
    assert (one_layer.sparsity, one_layer.bits, one_layer.non_uniform) == (0.42, 4, False)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"pattern": "2:4", "profile": "owl"}, "unstructured"),
        ({"sparsity": 0.5, "profile": "owl", "owl_lambda": 0.6}, "OWL's lambda 0.6"),
        ({"profile": "flat"}, "unknown sparsity profile 'flat'"),
        ({"bits": 16, "allocation": "mixed"}, "average"),
        ({"bits": 4, "allocation": "greedy"}, "unknown bit allocation 'greedy'"),
    ],
)
def test_bad_non_uniform_values_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        CompressionConfig(**fields)


def test_labels_keep_todays_names_and_show_the_digits_a_sparsity_has():
    assert CompressionConfig(sparsity=0.5).key() == "magnitude-50%"
    assert CompressionConfig(sparsity=0.25, prune_method="sparsegpt").key() == "sparsegpt-25%"
    assert CompressionConfig(sparsity=0.3, bits=4).key().startswith("magnitude-30% ")
    assert CompressionConfig(sparsity=0.999999).key() == "magnitude-99.9999%"
    assert CompressionConfig(sparsity=0.000001).key() == "magnitude-0.0001%"
    assert CompressionConfig(sparsity=0.125).key() == "magnitude-12.5%"
    assert CompressionConfig(sparsity=0.12).key() == "magnitude-12%"


def test_labels_tell_apart_owl_parameters_that_differ_past_six_digits():
    owl = dict(sparsity=0.5, profile="owl")
    assert CompressionConfig(**owl).key() == "magnitude-50%-owl-m5-l0.08"
    close = CompressionConfig(**owl, owl_m=5.0000001, owl_lambda=0.0800000001).key()
    assert close == "magnitude-50%-owl-m5.0000001-l0.0800000001"
