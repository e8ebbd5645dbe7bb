import optuna
import pytest

from sweep.compress.config import CompressionConfig
from sweep.space import all_configs, config_params, suggest_config
from sweep.spec import SearchSpace, load_spec

from .helpers import REPO


def _configs(space: SearchSpace, n: int) -> list[CompressionConfig]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(suggest_config(trial, space))
        study.tell(trial, 0.0)
    return out


def test_suggested_configs_stay_inside_the_space():
    space = SearchSpace(
        sparsity={"low": 0.1, "high": 0.5, "step": 0.2},
        patterns=["unstructured", "2:4"],
        bits=[3, 16],
        orders=["prune_first", "quant_first"],
        cases=["A", "B"],
    )
    for cfg in _configs(space, 60):
        assert cfg.pattern in space.patterns and cfg.bits in space.bits
        if cfg.pattern == "unstructured":
            assert cfg.sparsity in (0.1, 0.3, 0.5)
        assert cfg.canonical() in all_configs(space)


def test_parameters_without_effect_are_not_suggested():
    space = SearchSpace(sparsity={"values": [0.0, 0.5]}, bits=[4, 16], cases=["A", "B"])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(30):
        trial = study.ask()
        cfg = suggest_config(trial, space)
        params = set(trial.params)
        assert ("case" in params) == (cfg.prunes and cfg.quantizes)
        study.tell(trial, 0.0)


def test_space_size_counts_distinct_configs():
    # 3 sparsities x 2 bit-widths; (0.25, 4-bit) and (0.5, 4-bit) come in two cases -> 8
    space = SearchSpace(sparsity={"values": [0.0, 0.25, 0.5]}, bits=[4, 16], cases=["A", "B"])
    configs = all_configs(space)
    assert len(configs) == 3 * 2 + 2


def test_config_params_give_back_each_configuration():
    space = load_spec(REPO / "studies/demo.yaml").search
    for config in all_configs(space):
        params = config_params(config, space)
        assert suggest_config(optuna.trial.FixedTrial(params), space).key() == config.key()


@pytest.mark.parametrize("step", [0.1, 0.05])
def test_sparsity_grid_hits_both_ends(step):
    grid = SearchSpace(sparsity={"low": 0.0, "high": 0.7, "step": step}).sparsity.grid()
    assert grid[0] == 0.0 and grid[-1] == pytest.approx(0.7)
    assert len(grid) == round(0.7 / step) + 1


def test_non_uniform_variables_are_asked_only_where_they_act():
    space = SearchSpace(
        sparsity={"values": [0.0, 0.5]}, patterns=["unstructured", "2:4"], bits=[2, 3, 16],
        profiles=["uniform", "owl"], owl_lambdas=[0.04, 0.08], allocations=["uniform", "mixed"],
    )  # fmt: skip
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
    seen = set()
    for _ in range(80):
        trial = study.ask()
        cfg = suggest_config(trial, space)
        params = set(trial.params)
        assert ("profile" in params) == (cfg.pattern == "unstructured" and cfg.sparsity > 0)
        assert ("owl_lambda" in params) == (cfg.profile == "owl")
        assert "owl_m" not in params  # one choice: fixed
        assert ("allocation" in params) == (cfg.bits == 3)  # at 2 bits every layer gets 2
        assert cfg.canonical() in all_configs(space)
        seen.add(cfg.key())
        study.tell(trial, 0.0)
    # unstructured 50%: 3 profiles x (16-bit, 2-bit, 3-bit x 2 allocations); 2:4 and dense:
    # 1 x 4 each
    keys = {c.key() for c in all_configs(space)}
    assert len(keys) == 3 * 4 + 4 + 4 and seen <= keys and len(seen) >= 15
