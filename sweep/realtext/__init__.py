"""Evaluation and calibration from real English text that ships with every Python: the
language reference's topics in ``pydoc_data`` (evaluation) and the docstrings of standard
library modules (calibration, a different text). Nothing here is written by this project but the
way questions are cut from it; the questions are rebuilt, deterministically, when lm-eval loads
the tasks (``sweep/realtext/tasks``), so no one else's text is copied into the repository.

- ``realtext_cloze``: a sentence of the reference with its last word left out, and four
  candidate words: the right one and three others that end other sentences of it (chance 0.25).
- ``realtext_nextword``: a task of realistic size (about 4,000 questions), for measuring
  staged evaluation where it matters: the same reference half and the docstrings of other
  standard library modules than the calibration's, each sentence cut before up to two of its
  words (LAMBADA's question, at any word from the seventh on); four candidate words (chance 0.25).
  Docstrings differ between Python versions, and so does this task (a study pins its documents).
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
NEXTWORD_CUTS = 2  # questions cut from one sentence at most
NEXTWORD_FIRST_CUT = 6  # at least this many words of context
PERPLEXITY_PARAGRAPHS = 100
SEED = 0
_HEADING = re.compile(r"[*=\-~^]+")
_LAST_WORD = re.compile(r"[a-z]{4,}")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_PUNCTUATION = ".,;:"
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


# standard library modules whose docstrings the next-word task reads: none of the calibration's
NEXTWORD_MODULES = (
    "abc", "ast", "asyncio", "base64", "bisect", "bz2", "calendar", "cmd", "codecs",
    "concurrent.futures", "configparser", "copy", "dis", "doctest", "email.utils", "enum",
    "filecmp", "fileinput", "fnmatch", "ftplib", "getopt", "gettext", "glob", "gzip", "hashlib",
    "hmac", "html.parser", "http.cookiejar", "http.server", "imaplib", "importlib", "io",
    "locale", "lzma", "mailbox", "mimetypes", "multiprocessing", "numbers", "operator",
    "optparse", "os", "pdb", "pickletools", "platform", "plistlib", "poplib", "pprint",
    "profile", "pstats", "queue", "re", "reprlib", "sched", "secrets", "selectors", "shelve",
    "shlex", "signal", "smtplib", "socket", "socketserver", "ssl", "stat", "struct", "symtable",
    "sysconfig", "tempfile", "timeit", "tokenize", "trace", "traceback", "tracemalloc", "types",
    "unittest.mock", "urllib.request", "warnings", "wave", "weakref", "xml.dom.minidom",
    "xml.etree.ElementTree", "zipimport", "zoneinfo",
)  # fmt: skip


def nextword_questions(seed: int = SEED) -> list[dict]:
    """Every question ``{context, choices, answer}`` of the next-word task, in a fixed order."""
    texts = [p for p in paragraphs() if not _half(p)] + docstrings(NEXTWORD_MODULES, own=True)
    rng = random.Random(seed)
    cuts, seen = [], set()
    for text in texts:
        for sentence in _SENTENCE_END.split(text):
            words = sentence.split()
            if len(words) < 10 or sentence in seen:
                continue
            seen.add(sentence)
            at = [k for k in range(NEXTWORD_FIRST_CUT, len(words))
                  if _LAST_WORD.fullmatch(words[k].rstrip(_PUNCTUATION))]  # fmt: skip
            for k in sorted(rng.sample(at, min(NEXTWORD_CUTS, len(at)))):
                cuts.append((" ".join(words[:k]), words[k].rstrip(_PUNCTUATION)))
    vocabulary = sorted({word for _, word in cuts})
    questions = []
    for context, word in cuts:
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
    return docstrings(CALIBRATION_MODULES)


def docstrings(modules: tuple[str, ...], own: bool = False) -> list[str]:
    """The docstrings of ``modules``, their classes and functions (with ``own``, only those
    defined in the module), of 20 words or more, one line each, in a fixed order."""
    texts = []
    for name in modules:
        module = importlib.import_module(name)
        defined = [obj for _, obj in sorted(vars(module).items())
                   if inspect.isclass(obj) or inspect.isfunction(obj)]  # fmt: skip
        if own:
            defined = [obj for obj in defined if getattr(obj, "__module__", None) == name]
        members = [module, *defined]
        for obj in members:
            doc = inspect.getdoc(obj)
            if doc and len(doc.split()) >= 20:
                texts.append(" ".join(doc.split()))
    return texts


def as_dataset(rows: list[dict]) -> dict:
    """Rows as the {split: Dataset} that lm-eval's ``custom_dataset`` returns."""
    from datasets import Dataset

    return {"test": Dataset.from_list(rows)}
