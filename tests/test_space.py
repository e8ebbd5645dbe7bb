import itertools
import random
import time

import optuna
import pytest
from pydantic import ValidationError

from sweep.compress.config import CompressionConfig, allocation_acts
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


def _every_combination(space: SearchSpace) -> set[CompressionConfig]:
    """The space's configurations by brute force: every combination of every list, each made
    canonical (what ``all_configs`` computed before it skipped the choices without effect). A
    mixed allocation is not asked where it cannot act: the configuration is uniform there."""
    configs = set()
    for pattern in space.patterns:
        sparsities = space.sparsity.grid() if pattern == "unstructured" else [0.0]
        profiles = space.profiles if pattern == "unstructured" else ["uniform"]
        for s, bits, pm, qm, g, sym, order, case, profile, lam, m, alloc, act in itertools.product(
            sparsities, space.bits, space.prune_methods, space.quant_methods, space.group_sizes,
            space.symmetric, space.orders, space.cases, profiles, space.owl_lambdas,
            space.owl_ms, space.allocations, space.act_orders,
        ):  # fmt: skip
            if alloc == "mixed" and not allocation_acts(bits):
                alloc = "uniform"
            config = CompressionConfig(
                sparsity=s, pattern=pattern, bits=bits, prune_method=pm, quant_method=qm,
                group_size=g, symmetric=sym, order=order, case=case, profile=profile,
                owl_lambda=lam, owl_m=m, allocation=alloc, act_order=act,
            )  # fmt: skip
            configs.add(config.canonical())
    return configs


def test_the_space_is_listed_and_counted_as_every_combination_would_give_it():
    rng = random.Random(0)
    choices = {
        "sparsity": [0.0, 0.25, 0.5], "patterns": ["unstructured", "2:4", "4:8"],
        "prune_methods": ["magnitude", "wanda", "sparsegpt"], "quant_methods": ["rtn", "gptq"],
        "bits": [2, 3, 4, 8, 16], "group_sizes": [None, 32], "symmetric": [False, True],
        "orders": ["prune_first", "quant_first", "joint"], "cases": ["A", "B"],
        "profiles": ["uniform", "owl"], "owl_lambdas": [0.05, 0.08], "owl_ms": [3.0, 5.0, 5],
        "allocations": ["uniform", "mixed"], "act_orders": [False, True],
    }  # fmt: skip
    checked = 0
    for _ in range(60):
        fields = {k: rng.sample(v, rng.randint(1, len(v))) for k, v in choices.items()}
        fields["sparsity"] = {"values": fields["sparsity"]}
        try:
            space = SearchSpace(**fields)
        except ValidationError as err:  # mixed allocations alone, and no 3 or 4 bits
            assert "give no configuration with a mixed allocation" in str(err)
            assert fields["allocations"] == ["mixed"]
            assert not any(allocation_acts(b) for b in fields["bits"])
            continue
        expected = _every_combination(space)
        assert all_configs(space) == expected, fields
        assert space.size() == len(expected), fields
        checked += 1
    assert checked > 40


def test_listing_the_space_skips_the_choices_a_configuration_ignores():
    # 16 bits only: the 4 group sizes x 2 quantizers x 2 grids x 3 orders x 2 cases x 20 x 20
    # OWL parameters of a uniform profile multiply nothing (1,920,000 combinations a sparsity)
    space = SearchSpace(
        sparsity={"values": [0.0, 0.25, 0.5]}, bits=[16], group_sizes=[16, 32, 64, None],
        quant_methods=["rtn", "gptq"], symmetric=[False, True],
        orders=["prune_first", "quant_first", "joint"], cases=["A", "B"],
        owl_lambdas=[0.01 * i for i in range(1, 21)], owl_ms=list(range(1, 21)),
    )  # fmt: skip
    start = time.perf_counter()
    configs = all_configs(space)
    assert time.perf_counter() - start < 1.0
    assert {c.key() for c in configs} == {"base", "magnitude-25%", "magnitude-50%"}
    assert space.size() == 3


def test_keys_tell_apart_every_configuration_of_a_fine_space():
    space = SearchSpace(
        sparsity={"low": 0.999, "high": 0.999999, "step": 1e-6}, profiles=["uniform", "owl"],
        owl_ms=[5.0, 5.0000001], bits=[16],
    )  # fmt: skip
    configs = all_configs(space)
    keys = {c.key() for c in configs}
    assert len(configs) == space.size() == 1000 * 3
    assert len(keys) == len(configs)
    assert "magnitude-99.9999%" in keys and "magnitude-99.9999%-owl-m5.0000001-l0.08" in keys
