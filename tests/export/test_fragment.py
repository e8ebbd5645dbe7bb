import pytest

from sweep.compress import CompressionConfig
from sweep.export.fragment import the_config, trial_spec
from sweep.spec import load_spec
from tests.helpers import REPO


@pytest.mark.parametrize(
    "config",
    [
        CompressionConfig(sparsity=0.5, prune_method="wanda", profile="owl", owl_lambda=0.04,
                          owl_m=7.0, bits=4, quant_method="gptq", allocation="mixed"),
        CompressionConfig(bits=3, group_size=64, allocation="mixed"),
        CompressionConfig(pattern="2:4", prune_method="sparsegpt", bits=4, order="joint"),
    ],
    ids=["owl+mixed", "mixed", "uniform"],
)  # fmt: skip
def test_a_trial_spec_holds_exactly_its_configuration(config):
    spec = trial_spec(load_spec(REPO / "studies/demo.yaml"), config, "one")
    assert the_config(spec) == config.canonical()
