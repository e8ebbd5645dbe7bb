"""A seeded synthetic English corpus for the demo model, and its held-out evaluation questions.

The world is small on purpose so that the demo's narrow, deep Llama (see `sweep.demo.train`)
learns it in minutes on a CPU:

- **recall**: 40 invented countries with a capital, 50 invented people with a favourite colour,
  a home town, a job and a pet (240 facts). Each fact is written in training with four of its
  five question templates plus a reversed one; the fifth template is held out and becomes the
  question, so the model must recall the fact through a phrasing it never saw for that fact.
- **arithmetic**: "42 + 3 = 45." / "42 plus 3 is 45.", a two-digit number (10..89) plus or
  minus a digit (1..5), two-digit answers. 250 of the 785 problems are held out as questions;
  distractors are off by 1, 2 or 10. (With a digit up to 9 the units digit carries no signal
  from either operand alone, and a tiny model does not learn it in this budget.)
- **reasoning**: "Ann, Ben, Cara and Dan are friends. Ben is taller than Dan. ... Who is the
  tallest?" Four of 16 names, three shuffled comparisons (height or age), asking for either
  end; the choices are the four friends. Questions are fresh puzzles whose statements never
  occur in training.
- **filler**: everyday sentences in the same world (about ordinary people, never about the
  recall facts), for perplexity.

Everything is a pure function of a seed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

# ----------------------------------------------------------------------------- vocabulary

COLOURS = ["red", "blue", "green", "yellow", "purple", "brown", "white", "black"]
JOBS = ["baker", "farmer", "doctor", "teacher", "painter", "sailor", "miner", "weaver",
        "singer", "builder", "hunter", "potter"]  # fmt: skip
PETS = ["cat", "dog", "goat", "horse", "parrot", "rabbit", "mouse", "pig", "duck", "sheep"]
PLAIN_NAMES = [
    "Ann", "Ben", "Cara", "Dan", "Eve", "Finn", "Gus", "Hana", "Ivy", "Jack", "Kate", "Leo",
    "Mia", "Ned", "Olga", "Pete", "Quinn", "Rosa", "Sam", "Tess", "Uma", "Vic", "Wes", "Yara",
    "Zack", "Adam", "Bella", "Carl", "Dora", "Eli", "Fay", "Glen", "Holly", "Ian", "Jill",
    "Kurt", "Lily", "Max", "Nina", "Oscar", "Paul", "Rita", "Seth", "Tina", "Walt", "Zoe",
    "Amy", "Bob", "Cleo", "Dean", "Emma", "Fred", "Gina", "Hugo", "Iris", "Joel", "Kim",
    "Luke", "Mona", "Omar",
]  # fmt: skip
PUZZLE_NAMES = PLAIN_NAMES[:16]
WEATHER = ["cold", "warm", "rainy", "windy", "sunny", "dry", "foggy", "quiet"]
PLACES = ["river", "bridge", "old mill", "harbour", "forest", "school", "well", "market square",
          "tower", "garden"]  # fmt: skip
ITEMS = ["apples", "eggs", "loaves", "fish", "candles", "ropes", "pears", "nails"]
SEASONS = ["spring", "summer", "autumn", "winter"]
TOPICS = ["the sea", "old kings", "the stars", "a lost ring", "the mountains", "a brave dog"]

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr",
           "gr", "kr", "tr", "th", "sh", "qu", "st", "pl"]  # fmt: skip
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou", "ea"]
_CODAS = ["", "n", "r", "l", "s", "k", "m", "th", "x", "nd"]

# ----------------------------------------------------------------------------- templates
# "{s}" is the subject, "{o}" the answer. The first five templates of a relation end with
# "{o}." so that any of them can serve as a question; extra ones are used only in training.

TEMPLATES: dict[str, list[str]] = {
    "capital": [
        "The capital of {s} is {o}.",
        "{s} has its capital in {o}.",
        "The capital city of {s} is called {o}.",
        "The rulers of {s} meet in {o}.",
        "If you travel to the capital of {s}, you arrive in {o}.",
        "{o} is the capital of {s}.",
    ],
    "colour": [
        "The favourite colour of {s} is {o}.",
        "{s} likes the colour {o}.",
        "Of all the colours, {s} loves {o}.",
        "When {s} paints a wall, the paint is {o}.",
        "Ask {s} about colours and the answer is {o}.",
        "{o} is the favourite colour of {s}.",
    ],
    "home": [
        "{s} lives in {o}.",
        "The home of {s} is in {o}.",
        "Every night {s} sleeps at home in {o}.",
        "{s} has a small house in {o}.",
        "If you want to visit {s}, travel to {o}.",
        "{o} is where {s} lives.",
    ],
    "job": [
        "{s} works as a {o}.",
        "By trade, {s} is a {o}.",
        "Everyone knows {s} as the town {o}.",
        "{s} earns a living as a {o}.",
        "Each morning {s} goes to work as a {o}.",
        "There is a {o} called {s}.",
    ],
    "pet": [
        "{s} has a pet {o}.",
        "The pet of {s} is a {o}.",
        "At home, {s} feeds a {o}.",
        "{s} takes good care of a {o}.",
        "Every day {s} walks with a {o}.",
        "The {o} that lives with {s} is happy.",
    ],
}
N_QUESTION_TEMPLATES = 5

ARITHMETIC_FORMATS = ["{a} {word} {b} is {c}.", "{a} {sym} {b} = {c}."]
MAX_OPERAND = 89
SMALL = range(1, 6)

FILLER = [
    "{p} walked to the market in {city}.",
    "The weather in {country} was {weather} today.",
    "{p} and {q} met near the {place}.",
    "{p} bought {n} {item} at the market.",
    "In the morning, {p} read a book about {country}.",
    "The road from {city} to {city2} is long.",
    "{p} sang a song by the {place}.",
    "A storm came to {country} in the {season}.",
    "{p} told {q} a story about {topic}.",
    "The children of {city} played by the {place}.",
    "In the {season}, the {place} of {city} is {weather}.",
    "{p} sent a letter to {q} in {city}.",
    "Last {season}, {p} and {q} sailed from {city} to {city2}.",
    "{q} gave {p} {n} {item}.",
]


# ----------------------------------------------------------------------------- data types


@dataclass(frozen=True)
class Fact:
    """One fact: `relation(subject) = value`, with the template index held out for eval."""

    relation: str
    subject: str
    value: str
    held_out: int


@dataclass(frozen=True)
class Question:
    """A multiple-choice question: `context` + " " + `choices[answer]` is the right text."""

    context: str
    choices: list[str]
    answer: int


@dataclass(frozen=True)
class World:
    """The invented entities and every fact about them."""

    countries: list[str]
    cities: list[str]
    people: list[str]
    facts: list[Fact]

    def values(self, relation: str) -> list[str]:
        """All possible answers of a relation (the pool distractors are drawn from)."""
        return {
            "capital": self.cities,
            "home": self.cities,
            "colour": COLOURS,
            "job": JOBS,
            "pet": PETS,
        }[relation]


# ----------------------------------------------------------------------------- the world


def _invented_names(rng: random.Random, n: int, suffixes: list[str], taken: set[str]) -> list[str]:
    """`n` distinct pronounceable invented names, none of them in `taken`."""
    names: list[str] = []
    while len(names) < n:
        stem = rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_ONSETS[:14])
        name = (stem + rng.choice(_VOWELS) + rng.choice(_CODAS) + rng.choice(suffixes)).title()
        if name not in taken and 4 <= len(name) <= 10:
            taken.add(name)
            names.append(name)
    return names


def make_world(seed: int = 0, n_countries: int = 40, n_people: int = 50) -> World:
    """Invent countries, their capitals and people with four attributes each."""
    rng = random.Random(f"world-{seed}")
    taken = set(PLAIN_NAMES)
    countries = _invented_names(rng, n_countries, ["ia", "land", "ora", "mark"], taken)
    cities = _invented_names(rng, n_countries, ["ton", "holm", "port", "vale", "by"], taken)
    people = _invented_names(rng, n_people, [""], taken)
    facts = [
        Fact("capital", country, city, rng.randrange(N_QUESTION_TEMPLATES))
        for country, city in zip(countries, cities, strict=True)
    ]
    pools = {"colour": COLOURS, "home": cities, "job": JOBS, "pet": PETS}
    for person in people:
        for relation, pool in pools.items():
            held_out = rng.randrange(N_QUESTION_TEMPLATES)
            facts.append(Fact(relation, person, rng.choice(pool), held_out))
    return World(countries, cities, people, facts)


# ----------------------------------------------------------------------------- recall


def fact_sentences(fact: Fact) -> list[str]:
    """The training sentences of a fact: every template except its held-out one."""
    return [
        template.format(s=fact.subject, o=fact.value)
        for i, template in enumerate(TEMPLATES[fact.relation])
        if i != fact.held_out
    ]


def _split_question(template: str, subject: str) -> str:
    """The context of a question template: the text before " {o}."."""
    assert template.endswith(" {o}."), template
    return template[: -len(" {o}.")].format(s=subject)


def _choices(rng: random.Random, answer: str, pool: list[str]) -> tuple[list[str], int]:
    """`answer` and three distinct distractors from `pool`, shuffled; returns (choices, index)."""
    choices = [answer, *rng.sample([v for v in pool if v != answer], 3)]
    rng.shuffle(choices)
    return choices, choices.index(answer)


def recall_questions(world: World, seed: int = 0) -> list[Question]:
    """One question per fact, phrased with the fact's held-out template."""
    rng = random.Random(f"recall-{seed}")
    questions = []
    for fact in world.facts:
        context = _split_question(TEMPLATES[fact.relation][fact.held_out], fact.subject)
        choices, answer = _choices(rng, fact.value, world.values(fact.relation))
        questions.append(Question(context, choices, answer))
    return questions


# ----------------------------------------------------------------------------- arithmetic


def arithmetic_pairs(seed: int = 0, n_add: int = 150, n_sub: int = 100) -> tuple[
    list[tuple[str, int, int]], list[tuple[str, int, int]]
]:  # fmt: skip
    """All problems (op, a, b), `a` in 10..89 and `b` in 1..5, whose answer has two digits,
    split into (train, eval) with `n_add` additions and `n_sub` subtractions held out."""
    rng = random.Random(f"arith-{seed}")
    problems = [(op, a, b) for op in "+-" for a in range(10, MAX_OPERAND + 1) for b in SMALL]
    problems = [p for p in problems if 10 <= _solve(*p) <= 99]
    adds = [p for p in problems if p[0] == "+"]
    subs = [p for p in problems if p[0] == "-"]
    rng.shuffle(adds)
    rng.shuffle(subs)
    held = adds[:n_add] + subs[:n_sub]
    train = adds[n_add:] + subs[n_sub:]
    return sorted(train), held


def _solve(op: str, a: int, b: int) -> int:
    return a + b if op == "+" else a - b


def arithmetic_sentence(op: str, a: int, b: int, fmt: int) -> str:
    """A worked problem in format `fmt` (0: "42 plus 3 is 45.", 1: "42 + 3 = 45.")."""
    word = "plus" if op == "+" else "minus"
    return ARITHMETIC_FORMATS[fmt].format(a=a, b=b, c=_solve(op, a, b), word=word, sym=op)


def arithmetic_questions(pairs: list[tuple[str, int, int]], seed: int = 0) -> list[Question]:
    """Questions on held-out pairs; distractors (two-digit) are off by 1, 2 or 10."""
    rng = random.Random(f"arith-q-{seed}")
    questions = []
    for op, a, b in pairs:
        c = _solve(op, a, b)
        text = arithmetic_sentence(op, a, b, rng.randrange(len(ARITHMETIC_FORMATS)))
        context = text.rstrip(".")[: -len(str(c))].rstrip()
        pool = [str(c + d) for d in (-10, -2, -1, 1, 2, 10) if 10 <= c + d <= 99]
        choices, answer = _choices(rng, str(c), [str(c), *pool])
        questions.append(Question(context, choices, answer))
    return questions


# ----------------------------------------------------------------------------- reasoning


@dataclass(frozen=True)
class Puzzle:
    """Four people, `ranked` from most to least (tallest first), and the shuffled statements."""

    ranked: list[str]
    statements: list[str]
    most: str  # "tallest" or "oldest"
    least: str  # "shortest" or "youngest"
    order: list[str]  # the choices' order, a shuffle of `ranked`


def ordering_puzzle(rng: random.Random) -> Puzzle:
    """Four people ordered by height or age, told in three shuffled comparisons."""
    ranked = rng.sample(PUZZLE_NAMES, 4)
    more, most, least = rng.choice(
        [("taller", "tallest", "shortest"), ("older", "oldest", "youngest")]
    )
    statements = [f"{hi} is {more} than {lo}." for hi, lo in zip(ranked, ranked[1:], strict=False)]
    rng.shuffle(statements)
    return Puzzle(ranked, statements, most, least, rng.sample(ranked, 4))


def puzzle_question(puzzle: Puzzle, ask_most: bool) -> Question:
    """The question "Who is the tallest?" (or shortest, oldest, youngest) on a puzzle."""
    question = f"Who is the {puzzle.most if ask_most else puzzle.least}?"
    answer = puzzle.ranked[0] if ask_most else puzzle.ranked[-1]
    a, b, c, d = puzzle.order
    intro = f"{a}, {b}, {c} and {d} are friends."
    context = " ".join([intro, *puzzle.statements, question])
    return Question(context, puzzle.order, puzzle.order.index(answer))


def puzzle_document(puzzle: Puzzle, rng: random.Random) -> str:
    """A training document: the puzzle, then both of its questions answered, in random order."""
    first = rng.random() < 0.5
    q1, q2 = puzzle_question(puzzle, first), puzzle_question(puzzle, not first)
    return f"{answered(q1)} {q2.context.split('. ')[-1]} {q2.choices[q2.answer]}."


def puzzle_key(q: Question) -> str:
    """The statements of a reasoning question (what training must never repeat)."""
    return q.context.split(" are friends. ")[1].rsplit(" Who is", 1)[0]


def reasoning_questions(seed: int = 0, n: int = 250) -> list[Question]:
    """`n` distinct fresh puzzles for evaluation."""
    rng = random.Random(f"reason-q-{seed}")
    seen: set[str] = set()
    questions = []
    while len(questions) < n:
        puzzle = ordering_puzzle(rng)
        key = " ".join(puzzle.statements)
        if key not in seen:
            seen.add(key)
            questions.append(puzzle_question(puzzle, rng.random() < 0.5))
    return questions


# ----------------------------------------------------------------------------- filler


def filler_paragraph(rng: random.Random, world: World, n_sentences: int = 3) -> str:
    """A few everyday sentences in the world, about ordinary people (not the fact holders)."""
    sentences = []
    for template in rng.sample(FILLER, n_sentences):
        p, q = rng.sample(PLAIN_NAMES, 2)
        city, city2 = rng.sample(world.cities, 2)
        sentences.append(
            template.format(
                p=p, q=q, city=city, city2=city2, country=rng.choice(world.countries),
                weather=rng.choice(WEATHER), place=rng.choice(PLACES), n=rng.randint(2, 9),
                item=rng.choice(ITEMS), season=rng.choice(SEASONS), topic=rng.choice(TOPICS),
            )
        )  # fmt: skip
    return " ".join(sentences)


def perplexity_lines(world: World, seed: int = 0, n: int = 150) -> list[str]:
    """Held-out filler paragraphs for the perplexity task."""
    rng = random.Random(f"ppl-{seed}")
    return [filler_paragraph(rng, world, 4) for _ in range(n)]


# ----------------------------------------------------------------------------- documents

# Each ability is learned through a "phase change" that a thin slice of a mixed corpus reaches
# too late for a 10-minute budget, so training follows a curriculum: one phase that stresses
# each ability in turn (while rehearsing the earlier ones), then a balanced phase.
# Each phase is (share of the training steps, document mixture).
CURRICULUM: list[tuple[float, dict[str, float]]] = [
    (0.2, {"reasoning": 0.6, "recall": 0.4}),
    (0.25, {"recall": 0.75, "reasoning": 0.1, "filler": 0.15}),
    (0.25, {"arithmetic": 0.65, "recall": 0.25, "reasoning": 0.1}),
    (0.3, {"recall": 0.45, "arithmetic": 0.25, "reasoning": 0.2, "filler": 0.1}),
]
BALANCED = CURRICULUM[-1][1]


def answered(q: Question) -> str:
    """The question followed by its right answer, as a training sentence."""
    return f"{q.context} {q.choices[q.answer]}."


def documents(
    world: World, seed: int, mixture: dict[str, float], eval_puzzles: set[str] | None = None
) -> Iterator[str]:
    """An endless stream of training documents, each of one kind drawn from `mixture`.

    A recall document is one fact sentence, an arithmetic one 2-4 worked problems, a reasoning
    one a puzzle with both its questions answered, a filler one 2-4 sentences. Never yields a
    held-out recall template, a held-out arithmetic pair, or a puzzle whose statements are in
    `eval_puzzles` (see `puzzle_key`).
    """
    rng = random.Random(f"docs-{seed}")
    sentences = [s for fact in world.facts for s in fact_sentences(fact)]
    train_pairs, _ = arithmetic_pairs()
    kinds, weights = list(mixture), list(mixture.values())
    excluded = eval_puzzles or set()
    while True:
        kind = rng.choices(kinds, weights)[0]
        if kind == "recall":
            yield rng.choice(sentences)
        elif kind == "arithmetic":
            fmt = rng.randrange(len(ARITHMETIC_FORMATS))
            problems = rng.choices(train_pairs, k=rng.randint(2, 4))
            yield " ".join(arithmetic_sentence(op, a, b, fmt) for op, a, b in problems)
        elif kind == "reasoning":
            puzzle = ordering_puzzle(rng)
            if " ".join(puzzle.statements) not in excluded:
                yield puzzle_document(puzzle, rng)
        else:
            yield filler_paragraph(rng, world, rng.randint(2, 4))


def take(stream: Iterator[str], n: int) -> list[str]:
    """The first `n` items of a stream."""
    return [next(stream) for _ in range(n)]


def vocabulary_texts(world: World, seed: int = 0) -> list[str]:
    """Texts that hold every word the corpus and the questions can use (to build a vocabulary)."""
    texts = [s for fact in world.facts for s in fact_sentences(fact)]
    texts += [answered(q) + " " + " ".join(q.choices) for q in recall_questions(world, seed)]
    texts += [" ".join(ARITHMETIC_FORMATS) + " plus minus + - = 0 1 2 3 4 5 6 7 8 9"]
    texts += take(documents(world, seed, BALANCED), 5000)
    texts += [" ".join(words) for words in (PLAIN_NAMES, world.cities, world.countries,
              COLOURS, JOBS, PETS, WEATHER, PLACES, ITEMS, SEASONS, TOPICS, FILLER)]  # fmt: skip
    return texts
