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
