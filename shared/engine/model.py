"""The flow model: what a parsed flow file is. Plain data, with source lines; no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

INPUT_TYPES = ("string", "integer", "number", "boolean", "list", "object")
RESERVED_NAMES = ("inputs", "tenant", "run", "loop", "true", "false", "none", "null")


@dataclass(frozen=True)
class FieldSpec:
    """How a step field is written. `shape` is one of:
    text (string, templates allowed), value (anything, templates allowed in strings), name (identifier, no
    template), number / integer (a literal or a template), boolean (true / false), choice (one of `choices`),
    steps (a list of steps), response_format (text, json_object or a json_schema mapping), tools (OpenAI
    function tools), tool_choice (auto, none, required or a tool's name)."""

    shape: str
    required: bool = False
    choices: tuple[str, ...] = ()
    default: Any = None


COMMON_FIELDS = {"id": FieldSpec("name", required=True), "kind": FieldSpec("name", required=True),
                 "description": FieldSpec("text")}

STEP_KINDS: dict[str, dict[str, FieldSpec]] = {
    "declare_variable": {
        "name": FieldSpec("name", required=True),
        "type": FieldSpec("choice", required=True, choices=INPUT_TYPES),
        "value": FieldSpec("value"),
    },
    "set_variable": {
        "name": FieldSpec("name", required=True),
        "value": FieldSpec("value", required=True),
    },
    "load_credential": {
        "name": FieldSpec("text", required=True),
        "result": FieldSpec("name", default="credential"),
    },
    "create_azure_ai_connection": {
        "title": FieldSpec("text"),
        "api_key": FieldSpec("value"),
        "endpoint": FieldSpec("value", required=True),
        "connection_variable": FieldSpec("name", required=True),
        "api_version": FieldSpec("text"),
        "auth": FieldSpec("choice", choices=("key", "entra"), default="key"),
    },
    "chat_completion": {
        "connection": FieldSpec("text"),  # a static connection or the tenant's credential of that name
        "dynamic_connection": FieldSpec("name"),
        "model": FieldSpec("text", required=True),
        "system_prompt": FieldSpec("text"),
        "user_prompt": FieldSpec("text"),
        "history": FieldSpec("value"),
        "context": FieldSpec("value"),
        "prompt_template": FieldSpec("text"),
        "chat_template": FieldSpec("text"),
        "temperature": FieldSpec("number", default=0.7),
        "max_completion_tokens": FieldSpec("integer"),
        "response_format": FieldSpec("response_format", default="text"),
        "tools": FieldSpec("tools"),
        "tool_choice": FieldSpec("tool_choice"),
        "stream": FieldSpec("boolean", default=False),
        "result": FieldSpec("name", default="response"),
    },
    "if": {
        "condition": FieldSpec("value", required=True),
        "then": FieldSpec("steps", required=True),
        "else": FieldSpec("steps"),
    },
    "for_each": {
        "items": FieldSpec("value", required=True),
        "as": FieldSpec("name", required=True),
        "steps": FieldSpec("steps", required=True),
        "max_iterations": FieldSpec("integer", default=100),
        "concurrency": FieldSpec("integer", default=1),
        "output": FieldSpec("value"),
        "result": FieldSpec("name"),
    },
    "try": {
        "steps": FieldSpec("steps", required=True),
        "catch": FieldSpec("steps"),
        "error_variable": FieldSpec("name", default="error"),
    },
    "return": {
        "value": FieldSpec("value"),
    },
}
CHILD_BLOCKS = ("then", "else", "steps", "catch")


@dataclass
class InputSpec:
    name: str
    type: str = "string"
    required: bool = False
    default: Any = None
    description: str | None = None
    line: int = 0


@dataclass
class Step:
    id: str
    kind: str
    fields: dict[str, Any]
    line: int
    field_lines: dict[str, int] = field(default_factory=dict)
    blocks: dict[str, list[Step]] = field(default_factory=dict)  # then / else / steps / catch

    def get(self, name: str) -> Any:
        """The field's value, or its declared default."""
        if name in self.fields:
            return self.fields[name]
        spec = STEP_KINDS.get(self.kind, {}).get(name)
        return spec.default if spec else None

    def line_of(self, name: str) -> int:
        return self.field_lines.get(name, self.line)


@dataclass
class Flow:
    id: str
    source: str  # file path as given, for messages
    content_hash: str
    description: str = ""
    inputs: dict[str, InputSpec] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    output_lines: dict[str, int] = field(default_factory=dict)

    def walk(self) -> list[Step]:
        """Every step, depth first, in file order."""
        found: list[Step] = []

        def visit(steps: list[Step]) -> None:
            for step in steps:
                found.append(step)
                for block in step.blocks.values():
                    visit(block)

        visit(self.steps)
        return found
