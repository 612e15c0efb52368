"""Templates: Jinja2 in a sandbox, StrictUndefined. A field that is exactly one `{{ expr }}` keeps its native
value (a list stays a list); anything else renders to a string. Turning a Secret into text is an error."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, UndefinedError, nodes
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from shared.secret import Secret, SecretExposureError, secrets_refuse_text

GUARDS = ("default", "d", "defined", "undefined")
SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.DOTALL)
NAME_PATH = re.compile(r"^\s*([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\s*$", re.ASCII)
CONSTANT_NAMES = frozenset({"true", "false", "none", "True", "False", "None"})
DICT_ATTRIBUTES = frozenset(dir(dict))  # `d.items` is the method in Jinja, not the key: such paths go to Jinja


class TemplateError(Exception):
    """A template failed to compile or render; the message is one line and names no secret value."""


def to_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


class FlowSandbox(SandboxedEnvironment):
    """Jinja's sandbox, and nothing on a Secret is reachable: no attribute (so `reveal` is neither readable nor
    callable) and no bound method of one. The connection builder, outside the template layer, is its only reader."""

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, Secret):
            return False
        return bool(super().is_safe_attribute(obj, attr, value))

    def is_safe_callable(self, obj: Any) -> bool:
        if isinstance(obj, Secret) or isinstance(getattr(obj, "__self__", None), Secret):
            return False
        return bool(super().is_safe_callable(obj))


@lru_cache(maxsize=1)
def environment() -> SandboxedEnvironment:
    env = FlowSandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
    env.filters["tojson"] = to_json
    env.filters["json"] = to_json
    return env


def is_template(text: str) -> bool:
    return "{{" in text or "{%" in text


def single_expression(text: str) -> str | None:
    match = SINGLE_EXPRESSION.match(text)
    if not match:
        return None
    expr = match.group("expr")
    if "{{" in expr or "}}" in expr or "{%" in expr:
        return None
    return expr


def name_path(expr: str) -> tuple[str, ...] | None:
    """`inputs.ticket` → ("inputs", "ticket"): an expression that only names a variable and keys under it."""
    match = NAME_PATH.match(expr)
    if match is None:
        return None
    path = tuple(match.group(1).split("."))
    return None if path[0] in CONSTANT_NAMES else path


def lookup(path: tuple[str, ...], scope: dict[str, Any]) -> tuple[bool, Any]:
    """Jinja's own result for a name path through plain dicts (the sandbox's getattr finds no attribute of that name,
    then the key), without building a template context; (False, None) for anything else, which Jinja evaluates."""
    if path[0] not in scope:
        return False, None
    value = scope[path[0]]
    for key in path[1:]:
        if type(value) is not dict or key in DICT_ATTRIBUTES or key not in value:
            return False, None
        value = value[key]
    return True, value


@lru_cache(maxsize=4096)
def compiled(text: str) -> Any:
    """("path", name path, expression) | ("expr", None, expression) | ("template", None, template)."""
    env = environment()
    try:
        expr = single_expression(text)
        if expr is not None:
            path = name_path(expr)
            return ("path" if path else "expr", path, env.compile_expression(expr, undefined_to_none=False))
        return ("template", None, env.from_string(text))
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax error: {exc.message}") from None


def render_text(text: str, scope: dict[str, Any]) -> Any:
    if not is_template(text):
        return text
    mode, path, template = compiled(text)
    try:
        if mode == "path":
            found, value = lookup(path, scope)
            if found:
                return defined(value)
        with secrets_refuse_text():
            if mode != "template":
                return defined(template(**scope))
            return template.render(**scope)
    except SecretExposureError:
        raise TemplateError("a secret cannot be rendered into text") from None
    except UndefinedError as exc:
        raise TemplateError(f"undefined: {exc.message}") from None
    except SecurityError as exc:
        raise TemplateError(f"not allowed in a template: {exc}") from None
    except TemplateError:
        raise
    except Exception as exc:  # errors raised by expressions: 1/0, bad filters, type errors
        raise TemplateError(f"template failed: {type(exc).__name__}: {exc}") from None


def defined(value: Any) -> Any:
    """A native expression result must not hold an Undefined (StrictUndefined only fails when printed)."""
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if isinstance(value, (list, tuple)):
        for item in value:
            defined(item)
    elif isinstance(value, dict):
        for item in value.values():
            defined(item)
    return value


def render(value: Any, scope: dict[str, Any]) -> Any:
    """Renders every string inside `value` (recursively through lists and mappings)."""
    if isinstance(value, str):
        return render_text(value, scope)
    if isinstance(value, dict):
        return {k: render(v, scope) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, scope) for v in value]
    return value


def as_text(value: Any) -> str:
    """A rendered value as prompt text: strings as they are, structures as JSON. Refuses secrets."""
    if contains_secret(value):
        raise TemplateError("a secret cannot be rendered into text")
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return to_json(value)


def contains_secret(value: Any) -> bool:
    if isinstance(value, Secret):
        return True
    if isinstance(value, dict):
        return any(contains_secret(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(contains_secret(v) for v in value)
    return False


@dataclass(frozen=True)
class Reference:
    """A variable a template reads: `root` and the attribute/item chain after it (`inputs.ticket` → ("ticket",))."""

    root: str
    path: tuple[str, ...]


def references(text: str) -> list[Reference]:
    """Every free variable a template reads, with its constant attribute path. Raises TemplateError on bad syntax."""
    if not is_template(text):
        return []
    env = environment()
    try:
        expr = single_expression(text)
        tree = env.parse("{{" + expr + "}}" if expr is not None else text)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax error: {exc.message}") from None
    bound = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")} | set(env.globals)
    if any(True for _ in tree.find_all(nodes.For)):
        bound.add("loop")
    found: list[Reference] = []
    seen: set[int] = set()
    for guard in tree.find_all((nodes.Filter, nodes.Test)):  # `x | default(…)`, `x is defined`: may be undefined
        if guard.name in GUARDS and guard.node is not None:
            seen.update(id(n) for n in guard.node.find_all((nodes.Getattr, nodes.Getitem, nodes.Name)))
            seen.add(id(guard.node))
            if isinstance(guard, nodes.Test) and isinstance(guard.node, nodes.Name):
                bound.add(guard.node.name)  # `x is defined` guards every use of x in the template
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Name)):
        if id(node) in seen:
            continue
        path: list[str] = []
        current: Any = node
        while isinstance(current, (nodes.Getattr, nodes.Getitem)):
            seen.add(id(current))
            if isinstance(current, nodes.Getattr):
                path.append(current.attr)
            elif isinstance(current.arg, nodes.Const) and isinstance(current.arg.value, str):
                path.append(current.arg.value)
            else:
                path.clear()
            current = current.node
        if isinstance(current, nodes.Name) and current.ctx == "load" and current.name not in bound:
            seen.add(id(current))
            found.append(Reference(current.name, tuple(reversed(path))))
    return found
