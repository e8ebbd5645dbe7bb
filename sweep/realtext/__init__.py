"""Evaluation and calibration from real English text that ships with every Python: the
language reference's topics in ``pydoc_data`` (evaluation) and the docstrings of standard
library modules (calibration, a different text). Nothing here is written by this project but the
way questions are cut from it; the questions are rebuilt, deterministically, when lm-eval loads
the tasks (``sweep/realtext/tasks``), so no one else's text is copied into the repository.

- ``realtext_cloze``: a sentence of the reference with its last word left out, and four
  candidate words: the right one and three others that end other sentences of it (chance 0.25).
- ``realtext_perplexity``: word perplexity on paragraphs of the reference that no cloze
  question comes from.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import random
import re
from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
CLOZE_QUESTIONS = 400
PERPLEXITY_PARAGRAPHS = 100
SEED = 0
_HEADING = re.compile(r"[*=\-~^]+")
_LAST_WORD = re.compile(r"[a-z]{4,}")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
# standard library modules whose docstrings make the calibration text
CALIBRATION_MODULES = (
    "argparse", "collections", "contextlib", "csv", "dataclasses", "datetime", "decimal",
    "difflib", "email.message", "fractions", "functools", "heapq", "http.client", "inspect",
    "ipaddress", "itertools", "json", "logging", "pathlib", "pickle", "random", "shutil",
    "sqlite3", "statistics", "string", "subprocess", "tarfile", "textwrap", "threading",
    "typing", "unittest", "urllib.parse", "uuid", "zipfile",
)  # fmt: skip


def paragraphs() -> list[str]:
    """The prose paragraphs of the language reference (no code, no headings), one line each."""
    from pydoc_data.topics import topics

    out = []
    for name in sorted(topics):
        for block in re.split(r"\n\s*\n", topics[name]):
            lines = block.split("\n")
            if any(line.startswith(" ") for line in lines):
                continue  # code and grammar are indented
            if len(lines) > 1 and _HEADING.fullmatch(lines[-1].strip()):
                continue
            text = " ".join(line.strip() for line in lines).strip()
            if len(text.split()) >= 25:
                out.append(text)
    return out


def _half(text: str) -> int:
    """0 or 1, fixed for a paragraph: which of the two tasks it serves."""
    return hashlib.sha256(text.encode()).digest()[0] % 2


def cloze_questions(n: int = CLOZE_QUESTIONS, seed: int = SEED) -> list[dict]:
    """``n`` questions ``{context, choices, answer}`` from the paragraphs of one half."""
    sentences = []
    for paragraph in paragraphs():
        if _half(paragraph):
            continue
        for sentence in _SENTENCE_END.split(paragraph):
            words = sentence.split()
            if len(words) >= 10 and sentence.endswith(".") and _LAST_WORD.fullmatch(words[-1][:-1]):
                sentences.append((" ".join(words[:-1]), words[-1][:-1]))
    rng = random.Random(seed)
    vocabulary = sorted({word for _, word in sentences})
    questions = []
    for context, word in rng.sample(sentences, min(n, len(sentences))):
        choices = [word, *rng.sample([w for w in vocabulary if w != word], 3)]
        rng.shuffle(choices)
        questions.append({"context": context, "choices": choices, "answer": choices.index(word)})
    return questions


def perplexity_paragraphs(n: int = PERPLEXITY_PARAGRAPHS) -> list[dict]:
    """``n`` paragraphs ``{text}`` of the other half."""
    return [{"text": p} for p in paragraphs() if _half(p)][:n]


def calibration_texts() -> list[str]:
    """Docstrings of standard library modules, their classes and functions, in a fixed order:
    another text than the evaluation's (for ``calibration: {source: function}``)."""
    texts = []
    for name in CALIBRATION_MODULES:
        module = importlib.import_module(name)
        members = [module] + [obj for _, obj in sorted(vars(module).items())
                              if inspect.isclass(obj) or inspect.isfunction(obj)]  # fmt: skip
        for obj in members:
            doc = inspect.getdoc(obj)
            if doc and len(doc.split()) >= 20:
                texts.append(" ".join(doc.split()))
    return texts


def as_dataset(rows: list[dict]) -> dict:
    """Rows as the {split: Dataset} that lm-eval's ``custom_dataset`` returns."""
    from datasets import Dataset

    return {"test": Dataset.from_list(rows)}
