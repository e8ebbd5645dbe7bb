"""The shipped demo model degrades under compression the way real LLMs do (sweep.demo.criteria).

The whole check runs eight trials at build time and writes them to scores.json; here the two
extremes that a robust toy fails first, 2-bit round-to-nearest (must collapse) and 4-bit GPTQ
(must keep the model), are measured again and checked against their thresholds and the record.
"""

import json

import pytest

from sweep.demo import MODEL_DIR
from sweep.demo.criteria import CHECKS, PROBES, measure, verdicts

pytestmark = pytest.mark.slow  # eight compressions and evaluations of the demo model

PROBED = ["2-bit RTN", "4-bit GPTQ"]


@pytest.fixture(scope="module")
def measured():
    return measure(MODEL_DIR, PROBED)


def _sr(measured) -> dict[str, float]:
    return {name: r["sr"] for name, r in measured["probes"].items()}


def test_4bit_gptq_keeps_the_model_and_2bit_rtn_breaks_it(measured):
    sr = _sr(measured)
    assert sr["4-bit GPTQ"] >= 0.95
    assert sr["2-bit RTN"] <= 0.5


def test_build_recorded_every_criterion(measured):
    recorded = json.loads((MODEL_DIR / "scores.json").read_text())["criteria"]
    assert set(recorded["probes"]) == set(PROBES)
    failing = {text for text, ok in recorded["verdicts"].items() if not ok}
    assert failing == set()
    for name in PROBED:  # the same code on the same weights and data measures the same
        assert measured["probes"][name]["sr"] == pytest.approx(recorded["probes"][name]["sr"],
                                                               abs=0.002)  # fmt: skip


def test_verdicts_fail_a_robust_toy(measured):
    robust = {"base": measured["base"],
              "probes": {name: {"sr": 0.95} for name in PROBES}}  # fmt: skip
    failing = [text for text, ok in verdicts(robust) if not ok]
    assert "2-bit RTN: Sr <= 0.5" in failing and "70% magnitude: Sr <= 0.5" in failing
    assert len(failing) == 4  # the two collapses and the two "below" checks
    assert len(verdicts(robust)) == len(measured["base"]) + len(CHECKS)
