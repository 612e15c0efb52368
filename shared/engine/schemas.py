"""JSON Schemas in flows: the schema of a `json_schema` response format and the parameters of function tools.

The validator checks a schema once (is it a JSON Schema; with `strict: true`, does it follow the structured-output
rules the service enforces); the executor checks the model's JSON against it and names the JSON path that differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_SHOWN = 160


def shorten(text: str) -> str:
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "…"


def schema_mismatch(instance: Any, schema: dict[str, Any]) -> str | None:
    """None when `instance` matches; else `at $.path: reason` for the most relevant difference."""
    from jsonschema import exceptions as schema_errors
    from jsonschema import validators  # imported when a flow has a schema: it costs a third of start-up

    validator = validators.validator_for(schema)(schema)
    error = schema_errors.best_match(validator.iter_errors(instance))
    if error is None:
        return None
    return f"at {error.json_path}: {shorten(error.message)}"


@dataclass(frozen=True)
class SchemaProblem:
    path: tuple[str | int, ...]  # where in the schema document (keys and list indexes)
    message: str


def json_path(path: tuple[str | int, ...]) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def schema_problems(schema: Any, strict: bool) -> list[SchemaProblem]:
    """What is wrong with a schema as written in a flow (empty: nothing)."""
    if not isinstance(schema, dict):
        return [SchemaProblem((), "must be a JSON Schema mapping")]
    from jsonschema import exceptions as schema_errors
    from jsonschema import validators

    try:
        validators.validator_for(schema).check_schema(schema)
    except schema_errors.SchemaError as exc:
        path = tuple(exc.absolute_path)
        return [SchemaProblem(path, f"not a valid JSON Schema at {json_path(path)}: {shorten(exc.message)}")]
    return strict_problems(schema, ()) if strict else []


def strict_problems(schema: Any, path: tuple[str | int, ...]) -> list[SchemaProblem]:
    """Structured outputs with strict: every object lists all its properties as required and sets
    additionalProperties: false (the service refuses the schema otherwise)."""
    if not isinstance(schema, dict):
        return []
    problems: list[SchemaProblem] = []
    if schema.get("type") == "object" or "properties" in schema:
        properties = schema.get("properties") or {}
        if schema.get("additionalProperties") is not False:
            problems.append(SchemaProblem(path, f"strict: the object at {json_path(path)} must set "
                                          "additionalProperties: false"))
        missing = [name for name in properties if name not in (schema.get("required") or [])]
        if missing:
            problems.append(SchemaProblem(path, f"strict: the object at {json_path(path)} must list every property "
                                          f"in required (missing: {', '.join(missing)})"))
        for name, sub in properties.items():
            problems.extend(strict_problems(sub, (*path, "properties", name)))
    if isinstance(schema.get("items"), dict):
        problems.extend(strict_problems(schema["items"], (*path, "items")))
    for keyword in ("anyOf", "$defs", "definitions"):
        sub = schema.get(keyword)
        parts = sub.items() if isinstance(sub, dict) else enumerate(sub) if isinstance(sub, list) else []
        for key, part in parts:
            problems.extend(strict_problems(part, (*path, keyword, key)))
    return problems


def line_in(document: Any, path: tuple[str | int, ...], default: int) -> int:
    """The source line of `path` inside a document parsed with lines (yaml_source), else `default`."""
    line = default
    for part in path:
        line_of = getattr(document, "line_of", None)
        if line_of is None:
            break
        try:
            line = line_of(part)
            document = document[part]
        except (KeyError, IndexError, TypeError):
            break
    return line
