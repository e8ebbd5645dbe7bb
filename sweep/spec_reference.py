"""The study spec's reference, as Markdown, from the pydantic models themselves: every field
with its type, default and bounds, and what the source says of it (its description, or the
comment on or above its line). The documentation site builds its page from this at build time
(docs/hooks.py), so that the reference cannot drift from the code.

``python -m sweep.spec_reference`` prints it."""

from __future__ import annotations

import inspect
import json
import re
from typing import Any, get_args

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from sweep.spec import StudySpec

_FIELD_LINE = re.compile(r"^    (\w+): ")


def _comments(model: type[BaseModel]) -> dict[str, str]:
    """Field name -> the comment on its line, or the comment lines just above it."""
    out: dict[str, str] = {}
    above: list[str] = []
    for line in inspect.getsource(model).splitlines():
        stripped = line.strip()
        if stripped.startswith("#") and line.startswith("    #"):
            above.append(stripped.lstrip("# "))
            continue
        match = _FIELD_LINE.match(line)
        if match:
            trailing = line.split("  # ", 1)[1] if "  # " in line else ""
            text = " ".join([*above, trailing]).strip()
            if text:
                out[match[1]] = text
        above = []
    return out


def _type_text(annotation: Any) -> str:
    text = repr(annotation) if not isinstance(annotation, type) else annotation.__name__
    text = re.sub(r"\b(typing|pathlib|sweep\.spec)\.", "", text)
    text = re.sub(r"Annotated\[(\w+), [^\]]*\]", r"\1", text)
    return text.replace("NoneType", "None").replace(" | ", " or ")  # a | would split the cell


def _default_text(field: Any) -> str:
    if field.is_required():
        return "required"
    value = field.default
    if value is PydanticUndefined and field.default_factory is not None:
        value = field.default_factory()
    if isinstance(value, BaseModel):
        return "see below"
    return f"`{json.dumps(value, default=str)}`"


def _bounds(field: Any) -> str:
    words = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    found = []
    for item in field.metadata:
        for name, sign in words.items():
            if getattr(item, name, None) is not None:
                found.append(f"{sign} {getattr(item, name)}")
    return ", ".join(found)


def _models(model: type[BaseModel], seen: list[type[BaseModel]]) -> list[type[BaseModel]]:
    if model in seen:
        return seen
    seen.append(model)
    for field in model.model_fields.values():
        for inner in [field.annotation, *get_args(field.annotation)]:
            for candidate in [inner, *get_args(inner)]:
                if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                    _models(candidate, seen)
    return seen


def _section(model: type[BaseModel], path: str) -> str:
    doc = inspect.cleandoc(model.__doc__ or "")
    comments = _comments(model)
    rows = ["| field | type | default | bounds | what it is |", "|---|---|---|---|---|"]
    for name, field in model.model_fields.items():
        said = field.description or comments.get(name, "")
        row = [f"`{name}`", f"`{_type_text(field.annotation)}`", _default_text(field),
               _bounds(field), said.replace("|", "\\|")]  # fmt: skip
        rows.append("| " + " | ".join(row) + " |")
    return f"## `{path}`\n\n{doc}\n\n" + "\n".join(rows) + "\n"


def _paths() -> dict[type[BaseModel], str]:
    """Each model, named by where it sits in a spec (``evaluation.stages``)."""
    paths: dict[type[BaseModel], str] = {StudySpec: "spec"}
    queue = [StudySpec]
    while queue:
        model = queue.pop(0)
        for name, field in model.model_fields.items():
            for inner in [field.annotation, *get_args(field.annotation)]:
                for candidate in [inner, *get_args(inner)]:
                    if (isinstance(candidate, type) and issubclass(candidate, BaseModel)
                            and candidate not in paths):  # fmt: skip
                        prefix = "" if model is StudySpec else f"{paths[model]}."
                        paths[candidate] = f"{prefix}{name}"
                        queue.append(candidate)
    return paths


def spec_reference() -> str:
    """The whole reference page."""
    head = (
        "# Spec reference\n\nEvery field of a study spec, generated from the models in "
        "`sweep/spec.py` when this site is built. What the search variables mean, when a trial "
        "asks each and which values it takes is their entry in `sweep/compress/variables.py`; "
        "[Study specs](studies.md) explains them with examples.\n"
    )
    return head + "\n" + "\n".join(_section(m, p) for m, p in _paths().items())


if __name__ == "__main__":
    print(spec_reference())
