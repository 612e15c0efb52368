"""What the emulator answers beyond plain text: JSON that fits a schema, tool calls, and request checks.

Values come from the conversation, deterministically: a line `Key: value` in the last user message fills the
property or argument named `key` (lowercase, non-alphanumerics as _); other strings get the user's text (or, for
an `enum`, the option the text mentions, else one picked by the prompt digest); integers the first number in the
text (else 1); booleans true; arrays one item (or minItems).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

FACT_LINE = re.compile(r"^\s*(?P<key>[A-Za-z][\w .-]{0,60}?)\s*:\s*(?P<value>.+?)\s*$", re.MULTILINE)
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
TOOL_MARKER = re.compile(r"\[\[tool(?::(?P<name>[\w-]+))?\]\]")
MARKERS = re.compile(r"\[\[[^\]]*\]\]")
MAX_DEPTH = 8


def normalised(key: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", key.lower()).strip("_")


def facts_of(text: str) -> dict[str, str]:
    return {normalised(m.group("key")): m.group("value") for m in FACT_LINE.finditer(text)}


def plain_text(text: str) -> str:
    return " ".join(MARKERS.sub("", text).split())


class ValueMaker:
    """Builds a JSON value for a schema from the user's text."""

    def __init__(self, text: str, digest: str, root: dict[str, Any]) -> None:
        self.text = plain_text(text)
        self.facts = facts_of(text)
        self.digest = digest
        self.root = root

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target: Any = self.root
            for part in ref[2:].split("/"):
                target = target.get(part, {}) if isinstance(target, dict) else {}
            return target if isinstance(target, dict) else {}
        return schema

    def value(self, schema: Any, name: str = "", depth: int = 0) -> Any:
        if not isinstance(schema, dict) or depth > MAX_DEPTH:
            return None
        schema = self.resolve(schema)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return self.choose(schema["enum"], name)
        for keyword in ("anyOf", "oneOf"):
            options = [o for o in schema.get(keyword) or [] if isinstance(o, dict) and o.get("type") != "null"]
            if options:
                return self.value(options[0], name, depth + 1)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind == "object" or (kind is None and "properties" in schema):
            properties = schema.get("properties") or {}
            wanted = schema.get("required") or list(properties)
            return {key: self.value(properties.get(key, {}), key, depth + 1) for key in wanted}
        if kind == "array":
            count = max(int(schema.get("minItems") or 1), 1)
            return [self.value(schema.get("items") or {}, name, depth + 1) for _ in range(count)]
        fact = self.facts.get(normalised(name)) if name else None
        if kind == "integer":
            found = NUMBER.search(fact or self.text)
            return int(float(found.group())) if found else 1
        if kind == "number":
            found = NUMBER.search(fact or self.text)
            return float(found.group()) if found else 1.0
        if kind == "boolean":
            return (fact or "true").strip().lower() not in ("false", "no", "0", "n")
        if kind == "null":
            return None
        return fact if fact is not None else (self.text[:120] or name or "text")

    def choose(self, options: list[Any], name: str) -> Any:
        fact = self.facts.get(normalised(name)) if name else None
        lowered = (fact or self.text).lower()
        for option in options:
            if str(option).lower() in lowered:
                return option
        return options[int(self.digest, 16) % len(options)]


def tool_to_call(body: dict[str, Any], last_user: str, last_role: str) -> dict[str, Any] | None:
    """The tool the model calls now, or None: when tool_choice requires one (`required` or a named function),
    or when the last message is the user's and holds `[[tool]]` / `[[tool:NAME]]`."""
    functions = [t.get("function") for t in body.get("tools") or [] if isinstance(t, dict)]
    tools: list[dict[str, Any]] = [f for f in functions if isinstance(f, dict) and isinstance(f.get("name"), str)]
    if not tools:
        return None
    choice = body.get("tool_choice")
    by_name = {t["name"]: t for t in tools}
    if isinstance(choice, dict):
        return by_name.get(str((choice.get("function") or {}).get("name")))
    if choice == "none":
        return None
    marker = TOOL_MARKER.search(last_user) if last_role == "user" else None
    if marker is not None and marker.group("name"):
        return by_name.get(marker.group("name"))
    if choice == "required" or marker:
        text = last_user.lower()
        return next((t for t in tools if t["name"].lower() in text or t["name"].replace("_", " ") in text), tools[0])
    return None


def tool_call_for(tool: dict[str, Any], last_user: str, digest: str, index: int = 0) -> dict[str, Any]:
    import json

    parameters = tool.get("parameters") or {"type": "object", "properties": {}}
    arguments = ValueMaker(last_user, digest, parameters).value(parameters)
    call_id = "call_" + hashlib.sha256(f"{digest}:{tool['name']}:{index}".encode()).hexdigest()[:24]
    return {"id": call_id, "type": "function",
            "function": {"name": tool["name"], "arguments": json.dumps(arguments, ensure_ascii=False)}}


def invalid_request(message: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


ROLES = ("system", "assistant", "user", "function", "tool", "developer")
JSON_TYPES = {dict: "object", list: "array", str: "string", int: "integer", float: "decimal", bool: "boolean"}


def message_problem(messages: list[Any]) -> dict[str, Any] | None:
    """The 400 body the service gives for a message that is not an object with a known role."""
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            got = JSON_TYPES.get(type(message), "null")
            return invalid_request(f"Invalid type for '{where}': expected an object, but got {got} instead.", where,
                                   "invalid_type")
        role = message.get("role")
        if role not in ROLES:
            if role is None:
                return invalid_request(f"Missing required parameter: '{where}.role'.", f"{where}.role",
                                       "missing_required_parameter")
            return invalid_request(f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', "
                                   "'function', 'tool', and 'developer'.", f"{where}.role", "invalid_value")
    return None


def request_problem(body: dict[str, Any]) -> dict[str, Any] | None:
    """The 400 body the service gives for a parameter out of range, or None when the request is acceptable."""
    problem = message_problem(body.get("messages") or [])
    if problem is not None:
        return problem
    temperature = body.get("temperature")
    if temperature is not None:
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
            return invalid_request(f"Invalid type for 'temperature': expected a decimal, but got "
                                   f"{type(temperature).__name__} instead.", "temperature", "invalid_type")
        if temperature > 2:
            return invalid_request(f"Invalid 'temperature': decimal above maximum value. Expected a value <= 2, "
                                   f"but got {temperature} instead.", "temperature", "decimal_above_max_value")
        if temperature < 0:
            return invalid_request(f"Invalid 'temperature': decimal below minimum value. Expected a value >= 0, "
                                   f"but got {temperature} instead.", "temperature", "decimal_below_min_value")
    for name, low, high in (("max_tokens", 1, None), ("max_completion_tokens", 1, None), ("n", 1, 128)):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            return invalid_request(f"Invalid type for '{name}': expected an integer, but got "
                                   f"{type(value).__name__} instead.", name, "invalid_type")
        if value < low:
            return invalid_request(f"Invalid '{name}': integer below minimum value. Expected a value >= {low}, "
                                   f"but got {value} instead.", name, "integer_below_min_value")
        if high is not None and value > high:
            return invalid_request(f"Invalid '{name}': integer above maximum value. Expected a value <= {high}, "
                                   f"but got {value} instead.", name, "integer_above_max_value")
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            return invalid_request("Invalid type for 'tools': expected an array.", "tools", "invalid_type")
        for index, tool in enumerate(tools):
            function = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                return invalid_request(f"Missing required parameter: 'tools[{index}].function.name'.",
                                       f"tools[{index}].function.name", "missing_required_parameter")
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        name = str((choice.get("function") or {}).get("name"))
        names = [(t.get("function") or {}).get("name") for t in tools or [] if isinstance(t, dict)]
        if name not in names:
            return invalid_request(f"Invalid value for 'tool_choice': no function named '{name}' was specified in "
                                   "the 'tools' parameter.", "tool_choice", None)
    elif choice is not None and not tools:
        return invalid_request("Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
                               "specified.", "tool_choice", None)
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            return invalid_request("Missing required parameter: 'response_format.json_schema.name'.",
                                   "response_format.json_schema.name", "missing_required_parameter")
        if not isinstance(spec.get("schema"), dict):
            return invalid_request("Missing required parameter: 'response_format.json_schema.schema'.",
                                   "response_format.json_schema.schema", "missing_required_parameter")
    return None
