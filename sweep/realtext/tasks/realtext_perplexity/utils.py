"""Paragraphs chosen when lm-eval loads the task (see ``sweep.realtext``)."""

from sweep.realtext import as_dataset, perplexity_paragraphs


def load(**kwargs):
    return as_dataset(perplexity_paragraphs())
