"""The demo's questions are held out: no evaluation question appears in what the model trains on."""

import json
from itertools import islice

from sweep.demo import TASKS_DIR, corpus


def _questions(task: str) -> list[dict]:
    lines = (TASKS_DIR / task / "test.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_shipped_tasks_are_what_the_generator_writes():
    world = corpus.make_world(0)
    recall = corpus.recall_questions(world, 0)
    shipped = _questions("demo_recall")
    assert [q["context"] for q in shipped] == [q.context for q in recall]
    assert all(len(q["choices"]) == 4 and 0 <= q["answer"] < 4 for q in shipped)


def test_evaluation_questions_never_occur_in_training_documents():
    world = corpus.make_world(0)
    recall = [f"{q.context} {q.choices[q.answer]}." for q in corpus.recall_questions(world, 0)]
    train_pairs, held_pairs = corpus.arithmetic_pairs(0)
    reasoning = corpus.reasoning_questions(0)
    keys = {corpus.puzzle_key(q) for q in reasoning}
    docs = list(islice(corpus.documents(world, 1, corpus.BALANCED, keys), 20_000))
    text = "\n".join(docs)
    assert not set(train_pairs) & set(held_pairs)
    assert not any(sentence in text for sentence in recall)
    assert not any(key in text for key in keys)
    kinds = {"plus": 0, "taller": 0}
    for kind in kinds:
        kinds[kind] = sum(kind in d for d in docs)
    assert all(n > 500 for n in kinds.values())  # the stream does hold each kind
