"""The allocation benchmark's arms (what it compares, not what it measures on a model)."""

import pytest

from bench.allocation import TARGETS, non_uniform, single_effects, uniform_arm
from sweep.metrics import theoretical_compression_rate


@pytest.mark.parametrize("model", ["demo", "smollm2-135m"])
@pytest.mark.parametrize("tcr", TARGETS)
def test_each_arm_reaches_its_tcr_and_the_non_uniform_one_is_never_larger(model, tcr):
    arm = uniform_arm(model, tcr)
    assert len({c.key() for c in arm}) == len(arm) > 1
    for config in arm:
        assert not config.non_uniform
        assert theoretical_compression_rate(config.target_sparsity, config.bits) == tcr
        made = non_uniform(config)
        if made is None:  # nothing to spread: 2-bit alone
            assert not config.prunes and config.bits == 2
            continue
        assert made.non_uniform and made.key() != config.key()
        assert (made.sparsity, made.bits, made.prune_method, made.order) == (
            config.sparsity, config.bits, config.prune_method, config.order
        )  # fmt: skip
        assert (made.profile == "owl") == config.prunes
        assert (made.allocation == "mixed") == (config.bits in (3, 4))


def test_single_effects_split_a_config_that_takes_both():
    config = uniform_arm("demo", 0.875)[1]  # 50% + 4-bit: both apply
    owl, mixed = single_effects(config)
    assert (owl.profile, owl.allocation) == ("owl", "uniform")
    assert (mixed.profile, mixed.allocation) == ("uniform", "mixed")
    assert single_effects(uniform_arm("demo", 0.8125)[0]) == []  # 3-bit alone: mixed only
