"""A trial's staged evaluation on the demo model, against the full evaluation."""

from dataclasses import replace

import pytest

from sweep.compress import CompressionConfig
from sweep.evaluation.measurement import Stage
from sweep.evaluation.sample import draw_sample
from sweep.events import Events
from sweep.spec import load_spec
from sweep.workers import prepare_runner

from .conftest import REPO

pytestmark = pytest.mark.slow  # trials of the demo model, evaluated several ways

TWO_BIT = CompressionConfig(bits=2, quant_method="rtn", group_size=128)
LIMIT = 100  # documents of each task (of 240-250): the sample is drawn from these


@pytest.fixture(scope="module")
def staged_runner():
    spec = load_spec(REPO / "studies/demo.yaml")
    stages = spec.evaluation.stages.model_copy(update={"mode": "on", "min_docs": 40, "sample": 0.2})
    evaluation = spec.evaluation.model_copy(update={"stages": stages, "limit": LIMIT})
    spec = spec.model_copy(update={"evaluation": evaluation})
    with prepare_runner(spec, Events(), progress=False) as runner:
        yield runner, runner.evaluate_base()


def test_per_document_scores_are_lm_evals_scores(staged_runner):
    runner, base = staged_runner
    evaluator = runner.evaluator
    for task in evaluator.spec.tasks:
        assert evaluator.is_leaf(task.name)
        score, docs = evaluator.documents(task)
        per_doc = docs[task.name]
        assert sorted(per_doc) == list(range(LIMIT))
        assert score == pytest.approx(sum(per_doc.values()) / len(per_doc))
        assert score == pytest.approx(evaluator.task_score(task))
        assert base.scores[task.name] == pytest.approx(score)
    samples = base.task_samples()
    assert {t: s.size for t, s in samples.items()} == {t.name: 40 for t in evaluator.spec.tasks}


def test_a_trial_that_goes_on_measures_exactly_what_the_full_evaluation_does(staged_runner):
    runner, base = staged_runner
    full = runner.run(TWO_BIT, base).measurement
    staged = runner.run(TWO_BIT, base, stop=lambda best_case: False).measurement
    assert staged.stage == full.stage == Stage.FULL
    assert staged.task_scores == pytest.approx(full.task_scores, abs=1e-9)
    assert staged.sr == pytest.approx(full.sr, abs=1e-9)
    assert staged.perplexity == pytest.approx(full.perplexity)
    assert full.kl is None and staged.kl > 0
    assert {"kl_s", "sample_s", "rest_s", "perplexity_s"} <= set(staged.timings)


def test_a_trial_dominated_once_exact_stops_before_its_perplexity(staged_runner):
    runner, base = staged_runner
    asked = []

    def stop(m):
        asked.append(m)
        return m.stage == Stage.TASKS  # go on after the sample, stop once Sr is exact

    stopped = runner.run(TWO_BIT, base, stop=stop).measurement
    full = runner.run(TWO_BIT, base).measurement
    sample, exact = asked
    assert sample.stage == Stage.SAMPLE and exact.stage == Stage.TASKS
    assert stopped.stage == Stage.TASKS and not stopped.full
    assert stopped.perplexity is None and full.perplexity is not None
    assert stopped.task_scores == pytest.approx(full.task_scores, abs=1e-9)
    assert stopped.sr == pytest.approx(full.sr, abs=1e-9) and exact.sr == stopped.sr
    assert stopped.srcr == pytest.approx(full.srcr, abs=1e-9) and stopped.tcr == full.tcr
    assert "rest_s" in stopped.timings and "perplexity_s" not in stopped.timings


def test_a_stopped_trial_keeps_an_interval_holding_its_full_sr(staged_runner):
    runner, base = staged_runner
    asked = []

    def stop(estimated):
        asked.append(estimated)
        return True

    stopped = runner.run(TWO_BIT, base, stop=stop).measurement
    full = runner.run(TWO_BIT, base).measurement
    assert stopped.stage == Stage.SAMPLE and not stopped.full
    assert stopped.perplexity is None and stopped.kl > 0
    assert stopped.sr_low <= stopped.sr <= stopped.sr_high
    assert stopped.sr_low <= full.sr <= stopped.sr_high
    assert stopped.tcr == full.tcr and stopped.real_ratio == full.real_ratio
    (estimated,) = asked
    assert replace(estimated, timings=stopped.timings, agreement=stopped.agreement) == stopped
    for agreement in stopped.task_agreement().values():  # flips on the sample it scored
        assert (agreement.documents, agreement.population) == (40, LIMIT)
        assert 0 <= agreement.flips <= agreement.documents


def test_a_full_trial_counts_its_flips_against_every_base_document(staged_runner):
    runner, base = staged_runner
    full = runner.run(TWO_BIT, base).measurement
    evaluator = runner.evaluator  # the model still holds the compressed weights
    for task in evaluator.spec.tasks:
        compressed = evaluator.documents(task)[1][task.name]
        before = base.documents[task.name][task.name]
        agreement = full.task_agreement()[task.name]
        changed = sum(compressed[i] != before[i] for i in range(LIMIT))
        assert agreement.flips == changed > 0  # 2 bits changes answers
        assert agreement.documents == LIMIT
        assert agreement.recovery == pytest.approx(
            full.task_scores[task.name] / base.scores[task.name]
        )
        assert agreement.retention_low <= agreement.retention <= agreement.retention_high
        assert agreement.retention_low < agreement.retention_high  # retention clips at 0
    assert full.sr_low <= full.sr < full.sr_high  # an error bar, though every document was scored
    assert full.flips == sum(a.flips for a in full.task_agreement().values())


def test_a_racing_sample_scores_only_the_steps_it_reaches(staged_runner):
    runner, base = staged_runner
    evaluator = runner.evaluator
    runner.loaded.restore()
    racing = {
        t.name: draw_sample({t.name: dict(enumerate(base.documents[t.name][t.name]))},
                            [20, 40], 10, seed=0).to_dict()
        for t in evaluator.spec.tasks
    }  # fmt: skip
    asked = []

    def stop_at_second_step(m):
        asked.append(m)
        return len(asked) == 2

    at_two = runner.run(TWO_BIT, replace(base, samples=racing), stop=stop_at_second_step)
    first, second = asked
    assert first.stage == second.stage == Stage.SAMPLE
    assert second.sr_high - second.sr_low < first.sr_high - first.sr_low  # twice the documents
    assert {a.documents for a in at_two.measurement.task_agreement().values()} == {40}
    asked.clear()
    at_one = runner.run(TWO_BIT, replace(base, samples=racing), stop=lambda m: not asked.append(m))
    assert len(asked) == 1
    assert {a.documents for a in at_one.measurement.task_agreement().values()} == {20}


def test_a_sample_of_every_document_is_the_full_evaluation(staged_runner):
    runner, base = staged_runner
    evaluator = runner.evaluator
    runner.loaded.restore()
    everything = {
        t.name: draw_sample(evaluator.documents(t)[1], 0.5, 10_000, seed=0).to_dict()
        for t in evaluator.spec.tasks
    }
    whole = replace(base, samples=everything)
    asked = []
    staged = runner.run(TWO_BIT, whole, stop=lambda m: asked.append(m) or False).measurement
    full = runner.run(TWO_BIT, base).measurement
    estimated, exact = asked
    assert estimated.sr_low == estimated.sr == estimated.sr_high == pytest.approx(full.sr)
    assert exact.stage == Stage.TASKS and exact.sr == pytest.approx(full.sr)
    assert staged.task_scores == pytest.approx(full.task_scores, abs=1e-9)
