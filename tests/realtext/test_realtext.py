"""Real-text tasks: questions cut deterministically from the Python language reference, each
with one right answer among four; perplexity paragraphs and calibration text apart from them."""

from sweep.calibration_data import calibration_batches
from sweep.realtext import (
    CALIBRATION_MODULES,
    NEXTWORD_MODULES,
    calibration_texts,
    cloze_questions,
    nextword_questions,
    paragraphs,
    perplexity_paragraphs,
)
from sweep.spec import CalibrationSpec


def test_cloze_questions_are_deterministic_and_well_formed():
    questions = cloze_questions()
    assert questions == cloze_questions()  # rebuilt the same every time lm-eval loads the task
    assert 300 <= len(questions) <= 400
    text = [" ".join(p.split()) for p in paragraphs()]
    for q in questions:
        assert len(q["choices"]) == len(set(q["choices"])) == 4
        answer = q["choices"][q["answer"]]
        sentence = f"{q['context']} {answer}."
        assert any(sentence in p for p in text), sentence
    answers = [q["answer"] for q in questions]
    assert all(answers.count(i) > len(answers) / 8 for i in range(4))  # no position favoured


def test_the_next_word_task_is_large_deterministic_and_apart_from_calibration_and_perplexity():
    questions = nextword_questions()
    assert questions == nextword_questions()
    assert len(questions) >= 3000  # a task of the size users run, for staged evaluation's bench
    assert not set(NEXTWORD_MODULES) & set(CALIBRATION_MODULES)
    for q in questions:
        assert len(q["choices"]) == len(set(q["choices"])) == 4
        assert len(q["context"].split()) >= 6
    answers = [q["answer"] for q in questions]
    assert all(answers.count(i) > len(answers) / 5 for i in range(4))  # no position favoured
    calibration = " ".join(calibration_texts())
    perplexity = " ".join(p["text"] for p in perplexity_paragraphs())
    sampled = questions[::40]  # a hundred of them: substring search over the whole is slow
    assert not any(q["context"] in calibration or q["context"] in perplexity for q in sampled)


def test_perplexity_paragraphs_and_calibration_text_are_apart_from_the_questions():
    contexts = [q["context"] for q in cloze_questions()]
    texts = [p["text"] for p in perplexity_paragraphs()]
    assert len(texts) == 100
    assert not any(c in t for c in contexts[:100] for t in texts)
    calibration = " ".join(calibration_texts())
    assert len(calibration.split()) > 10_000
    assert not any(c in calibration for c in contexts)
    assert not any(t[:200] in calibration for t in texts)


def test_calibration_from_a_function(toy_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(toy_dir / "model")
    spec = CalibrationSpec(source="function", function="sweep.realtext:calibration_texts",
                           samples=4, seq_len=16)  # fmt: skip
    ids = calibration_batches(spec, tokenizer)
    assert tuple(ids.shape) == (4, 16)
