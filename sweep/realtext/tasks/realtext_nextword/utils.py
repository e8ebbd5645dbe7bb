"""Questions built when lm-eval loads the task (see ``sweep.realtext``)."""

from sweep.realtext import as_dataset, nextword_questions


def load(**kwargs):
    return as_dataset(nextword_questions())
