"""Questions built when lm-eval loads the task (see ``sweep.realtext``)."""

from sweep.realtext import as_dataset, cloze_questions


def load(**kwargs):
    return as_dataset(cloze_questions())
