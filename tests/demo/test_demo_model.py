"""The bundled demo model is far above chance on its tasks, so compression has room to hurt."""

import pytest

from sweep.demo import DEMO_TASKS, MODEL_DIR, PERPLEXITY_TASK, TASKS_DIR
from sweep.evaluation.harness import Evaluator
from sweep.model import load_model
from sweep.spec import EvaluationSpec

ACCURACY_FLOOR = 0.8


@pytest.fixture(scope="module")
def base_scores():
    model, tokenizer = load_model(MODEL_DIR, device="cpu")
    spec = EvaluationSpec(tasks=DEMO_TASKS, perplexity_task=PERPLEXITY_TASK)
    evaluator = Evaluator(spec, model, tokenizer, [TASKS_DIR])
    try:
        yield evaluator.score(), evaluator.random_scores
    finally:
        evaluator.close()


def test_model_is_small_enough_to_ship():
    size = (MODEL_DIR / "model.safetensors").stat().st_size
    assert size <= 30 * 2**20


def test_architecture_gives_compression_real_matrices():
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(MODEL_DIR)
    assert config.model_type == "llama"
    assert config.num_key_value_heads < config.num_attention_heads
    assert config.num_hidden_layers >= 8  # depth is what makes compression errors compound
    widths = (config.hidden_size, config.intermediate_size)
    assert all(w >= 128 and w % 128 == 0 for w in widths)  # group 128 fits every layer


@pytest.mark.parametrize("task", DEMO_TASKS)
def test_accuracy_floor(base_scores, task):
    scores, random_scores = base_scores
    assert random_scores[task] <= 0.25
    assert scores.tasks[task] >= ACCURACY_FLOOR, f"{task}: {scores.tasks[task]:.3f}"


def test_perplexity_is_finite_and_low(base_scores):
    scores, _ = base_scores
    assert 1.0 < scores.perplexity < 50.0
