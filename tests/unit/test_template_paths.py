"""A template that only names a variable path (`{{ inputs.ticket }}`) is looked up without Jinja's context: its
result, and its error, must be exactly what Jinja gives for the same template."""

from __future__ import annotations

from typing import Any

import pytest

from shared.engine import templates
from shared.engine.templates import TemplateError, render_text
from shared.secret import Secret

SCOPE: dict[str, Any] = {
    "inputs": {"q": "order 7?", "items": ["a", "b"], "n": 0, "none": None, "nested": {"deep": {"er": [1, {"x": 2}]}}},
    "reply": {"content": "It ships today.", "usage": {"total_tokens": 12}},
    "conn": {"api_key": Secret("sk-123"), "endpoint": "https://example.invalid"},
    "text": "plain",
    "true": "shadowed?",
}


def jinja(text: str, scope: dict[str, Any]) -> Any:
    """The same template through Jinja only (the compiled expression, no path lookup)."""
    _, _, expression = templates.compiled(text)
    return templates.defined(expression(**scope))


@pytest.mark.parametrize("text", [
    "{{ inputs.q }}", "{{inputs.q}}", "  {{ reply.content }}\n", "{{ inputs.nested.deep.er }}", "{{ inputs.n }}",
    "{{ inputs.none }}", "{{ reply.usage }}", "{{ text }}", "{{ inputs }}",
    "{{ inputs.items }}",  # `items` is also a dict method: Jinja's answer (the method) must win
    "{{ true }}",  # a constant, not the scope's `true`
])
def test_a_name_path_renders_what_jinja_renders(text: str) -> None:
    expected = jinja(text, SCOPE)
    got = render_text(text, SCOPE)
    if callable(expected):
        assert callable(got) and got.__name__ == expected.__name__
    else:
        assert got == expected and type(got) is type(expected)


def test_a_name_path_is_looked_up_without_jinja_only_through_plain_dicts() -> None:
    assert templates.lookup(("inputs", "q"), SCOPE) == (True, "order 7?")
    assert templates.lookup(("inputs", "items"), SCOPE) == (False, None)  # a dict attribute: Jinja decides
    assert templates.lookup(("text", "upper"), SCOPE) == (False, None)  # not a dict: Jinja decides
    assert templates.lookup(("missing",), SCOPE) == (False, None)
    assert templates.name_path(" a.b_2.c ") == ("a", "b_2", "c")
    assert templates.name_path("a.b | upper") is None and templates.name_path("none") is None


@pytest.mark.parametrize(("text", "message"), [
    ("{{ inputs.missing }}", "undefined: 'dict object' has no attribute 'missing'"),
    ("{{ nowhere }}", "undefined: 'nowhere' is undefined"),
    ("{{ inputs.q.deeper }}", "undefined: 'str object' has no attribute 'deeper'"),
])
def test_a_missing_name_path_fails_as_jinja_does(text: str, message: str) -> None:
    with pytest.raises(TemplateError) as raised:
        render_text(text, SCOPE)
    assert str(raised.value) == message


def test_a_secret_is_passed_natively_but_never_rendered_into_text() -> None:
    assert isinstance(render_text("{{ conn.api_key }}", SCOPE), Secret)
    with pytest.raises(TemplateError, match="a secret cannot be rendered into text"):
        render_text("key: {{ conn.api_key }}", SCOPE)
