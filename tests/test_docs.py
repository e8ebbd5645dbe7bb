"""The README is a user's page that links into the documentation, and the spec reference is
generated from the models, field for field."""

import re
from pathlib import Path

import yaml

from sweep.spec import SearchSpace, StudySpec
from sweep.spec_reference import spec_reference

REPO = Path(__file__).resolve().parent.parent


def test_the_readme_is_short_and_its_links_lead_somewhere():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    links = re.findall(r"\]\(([^)#]+)(#[^)]*)?\)", readme)
    local = [(path, anchor) for path, anchor in links if not path.startswith("http")]
    assert len(local) >= 8
    for path, anchor in local:
        target = REPO / path
        assert target.is_file(), path
        if anchor and path.endswith(".md"):
            headings = re.findall(r"^#+ (.+)$", target.read_text(), re.M)
            slugs = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings}
            assert anchor[1:] in slugs, (path, anchor)


def test_every_page_of_the_site_exists():
    nav = yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"]

    def pages(items):
        for item in items:
            for value in item.values():
                yield from pages(value) if isinstance(value, list) else [value]

    listed = list(pages(nav))
    generated = {"reference.md"}
    assert generated <= set(listed)
    assert all((REPO / "docs" / p).is_file() for p in listed if p not in generated)


def test_the_spec_reference_has_every_field_of_every_model_with_its_default():
    page = spec_reference()
    sections = dict(re.findall(r"^## `([\w.]+)`\n(.*?)(?=^## |\Z)", page, re.M | re.S))
    assert {"spec", "search", "search.sparsity", "evaluation.stages", "deploy"} <= set(sections)
    for name in StudySpec.model_fields:
        assert f"| `{name}` |" in sections["spec"], name
    for name in SearchSpace.model_fields:
        assert f"| `{name}` |" in sections["search"], name
    assert "| `act_orders` | `list[bool]` | `[false]` |" in sections["search"]
    assert "| `samples` | `int` | `64` | > 0 |" in sections["calibration"]
