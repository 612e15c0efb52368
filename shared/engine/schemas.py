"""JSON Schemas in flows: the schema of a `json_schema` response format and the parameters of function tools.

The validator checks a schema once (is it a JSON Schema; with `strict: true`, does it follow the structured-output
rules the service enforces); the executor checks the model's JSON against it and names the JSON path that differs.
"""

from __future__ import annotations

from typing import Any

from jsonschema import exceptions as schema_errors
from jsonschema import validators

MAX_SHOWN = 160


def shorten(text: str) -> str:
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "…"


def schema_mismatch(instance: Any, schema: dict[str, Any]) -> str | None:
    """None when `instance` matches; else `at $.path: reason` for the most relevant difference."""
    validator = validators.validator_for(schema)(schema)
    error = schema_errors.best_match(validator.iter_errors(instance))
    if error is None:
        return None
    return f"at {error.json_path}: {shorten(error.message)}"


def schema_problems(schema: Any, strict: bool) -> list[str]:
    """What is wrong with a schema as written in a flow (empty: nothing)."""
    if not isinstance(schema, dict):
        return ["must be a JSON Schema mapping"]
    try:
        validators.validator_for(schema).check_schema(schema)
    except schema_errors.SchemaError as exc:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in exc.absolute_path)
        return [f"not a valid JSON Schema at ${where}: {shorten(exc.message)}"]
    return strict_problems(schema, "$") if strict else []


def strict_problems(schema: Any, where: str) -> list[str]:
    """Structured outputs with strict: every object lists all its properties as required and sets
    additionalProperties: false (the service refuses the schema otherwise)."""
    if not isinstance(schema, dict):
        return []
    problems: list[str] = []
    if schema.get("type") == "object" or "properties" in schema:
        properties = schema.get("properties") or {}
        if schema.get("additionalProperties") is not False:
            problems.append(f"strict: the object at {where} must set additionalProperties: false")
        missing = [name for name in properties if name not in (schema.get("required") or [])]
        if missing:
            problems.append(f"strict: the object at {where} must list every property in required "
                            f"(missing: {', '.join(missing)})")
        for name, sub in properties.items():
            problems.extend(strict_problems(sub, f"{where}.{name}"))
    if isinstance(schema.get("items"), dict):
        problems.extend(strict_problems(schema["items"], f"{where}[]"))
    for keyword in ("anyOf", "$defs", "definitions"):
        sub = schema.get(keyword)
        parts = sub.items() if isinstance(sub, dict) else enumerate(sub) if isinstance(sub, list) else []
        for key, part in parts:
            problems.extend(strict_problems(part, f"{where}.{keyword}.{key}"))
    return problems
