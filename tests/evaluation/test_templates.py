import jinja2
import pytest
from lm_eval import utils

from sweep.evaluation.templates import compile_templates_once


def test_each_template_is_compiled_once_and_renders_as_lm_eval_renders_it(monkeypatch):
    template = "{{ question | regex_replace('x', 'y') }}? {{ choices[answer] }}"
    docs = [{"question": f"x{i}", "choices": ["a", "b"], "answer": i % 2} for i in range(50)]
    expected = [utils.env.from_string(template).render(**doc) for doc in docs]
    compile_templates_once()
    compile_templates_once()  # a second call changes nothing
    compiled = []
    original = utils.env.from_string
    monkeypatch.setattr(utils.env, "from_string", lambda t: compiled.append(t) or original(t))
    fresh = template + " "  # a template this process has not compiled yet
    assert [utils.apply_template(template, doc) for doc in docs] == expected
    assert [utils.apply_template(fresh, doc) for doc in docs] == [e + " " for e in expected]
    assert compiled.count(fresh) == 1
    with pytest.raises(jinja2.UndefinedError):  # lm-eval's strict undefined still holds
        utils.apply_template("{{ missing }}", {})
