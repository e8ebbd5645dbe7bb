"""lm-eval renders a task's prompt templates (Jinja) for every document, and compiles the template
afresh each time (its `utils.apply_template` calls `Environment.from_string`; lm-eval issue
#1286). A trial builds its requests several times (base model, sample, the rest), so compiling
costs more than evaluating a small model. Compile each template once, in lm-eval's own
environment (its filters, its strict undefined), and render as before."""

from __future__ import annotations

import functools
from typing import Any


def compile_templates_once() -> None:
    """Make lm-eval compile each distinct template string once per process. Idempotent."""
    from lm_eval import utils

    if getattr(utils.apply_template, "_sweep_compiled_once", False):
        return

    @functools.lru_cache(maxsize=4096)
    def compiled(template: str) -> Any:
        return utils.env.from_string(template)

    def apply_template(template: str, doc: dict) -> str:
        return compiled(template).render(**doc)

    apply_template._sweep_compiled_once = True  # type: ignore[attr-defined]
    utils.apply_template = apply_template
