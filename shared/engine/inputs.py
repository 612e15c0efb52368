"""Run inputs checked and coerced against a flow's declared inputs."""

from __future__ import annotations

import json
from typing import Any

from shared.engine.errors import InputError
from shared.engine.model import Flow
from shared.engine.parser import type_name
from shared.engine.validator import TYPE_CHECKS


def coerce_inputs(flow: Flow, raw: dict[str, Any], from_strings: bool = False) -> dict[str, Any]:
    """Returns inputs with defaults applied. `from_strings` parses CLI `k=v` text by the declared type.
    Raises InputError mapping each bad field (`inputs.<name>`) to a message."""
    errors: dict[str, str] = {}
    result: dict[str, Any] = {}
    if not isinstance(raw, dict):
        raise InputError({"inputs": f"must be an object, got {type_name(raw)}"})
    for name in raw:
        if name not in flow.inputs:
            known = ", ".join(flow.inputs) or "none"
            errors[f"inputs.{name}"] = f"unknown input for flow {flow.id} (known: {known})"
    for name, spec in flow.inputs.items():
        if name not in raw or raw[name] is None:
            if spec.required:
                errors[f"inputs.{name}"] = f"required input missing ({spec.type})"
            else:
                result[name] = spec.default
            continue
        value = raw[name]
        if from_strings and isinstance(value, str):
            try:
                value = parse_text(value, spec.type)
            except ValueError as exc:
                errors[f"inputs.{name}"] = str(exc)
                continue
        if not TYPE_CHECKS[spec.type](value):
            errors[f"inputs.{name}"] = f"must be {spec.type}, got {type_name(value)}"
            continue
        result[name] = value
    if errors:
        raise InputError(errors)
    return result


def parse_text(text: str, input_type: str) -> Any:
    if input_type == "string":
        return text
    if input_type == "integer":
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"must be an integer, got {text!r}") from None
    if input_type == "number":
        try:
            return int(text) if text.strip().lstrip("-").isdigit() else float(text)
        except ValueError:
            raise ValueError(f"must be a number, got {text!r}") from None
    if input_type == "boolean":
        lowered = text.strip().lower()
        if lowered in ("true", "yes", "1", "on"):
            return True
        if lowered in ("false", "no", "0", "off"):
            return False
        raise ValueError(f"must be true or false, got {text!r}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(f"must be JSON ({input_type}), got {text!r}") from None
    return value
