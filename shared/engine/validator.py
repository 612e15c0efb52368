"""Validation stage: pure checks of a parsed Flow. Raises FlowError naming file:line, step and field.

Scope rules: `inputs`, `tenant` (id, name) and `run` (id) are always defined. A step's `result`,
`declare_variable` names and `connection_variable`s are defined from that step on (flow-wide, including
after an `if` or a loop). A `for_each` variable exists only inside its steps (and its `output`); a `try` error
variable only inside its `catch`. A `for_each` with `concurrency` other than 1 may not `set_variable` a variable
declared outside it, nor `return`.

Connections: `connection: NAME` is the static connection NAME when there is one; any other NAME is the running
tenant's own credential NAME, looked up at run time (so NAME must be a credential name, and a near miss of a
static name is reported as the typo it most likely is).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from shared.engine.errors import FlowError, Problem
from shared.engine.model import COMMON_FIELDS, INPUT_TYPES, RESERVED_NAMES, STEP_KINDS, Flow, Step
from shared.engine.model_names import MODEL_NAME_RULE, is_model_name
from shared.engine.parser import is_identifier, suggest, type_name
from shared.engine.schemas import line_in, schema_problems
from shared.engine.templates import Reference, TemplateError, references

MAX_CONCURRENCY = 16
CREDENTIAL_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")  # as tenant credentials are named
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
TOOL_CHOICES = ("auto", "none", "required")
RESPONSE_FORMAT_KEYS = ("type", "name", "schema", "strict", "description")
FUNCTION_KEYS = ("name", "description", "parameters", "strict")
INNER_FIELDS = {("for_each", "output")}  # checked in the loop's own scope

BUILTIN_ROOTS = {"inputs": None, "tenant": ("id", "name"), "run": ("id", "flow", "trigger")}
TEXT_SINKS = {
    "chat_completion": ("system_prompt", "user_prompt", "history", "context", "prompt_template", "chat_template"),
    "return": ("value",),
}
CREDENTIAL_PUBLIC_FIELDS = ("endpoint", "api_version", "auth", "kind", "name", "version", "base_url")
TYPE_CHECKS: dict[str, Any] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "list": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


@dataclass
class Scope:
    names: dict[str, str] = field(default_factory=dict)  # name → what defined it (variable, result, loop...)
    declared: set[str] = field(default_factory=set)  # declare_variable names (set_variable targets)
    credentials: set[str] = field(default_factory=set)  # names bound to load_credential results
    connections: set[str] = field(default_factory=set)  # dynamic connection variables

    def child(self) -> Scope:
        return Scope(dict(self.names), set(self.declared), set(self.credentials), set(self.connections))

    def absorb(self, other: Scope, drop: str | None = None) -> None:
        """Definitions made inside a block stay defined after it — except the block's own variable."""
        for name, what in other.names.items():
            if name != drop or name in self.names:
                self.names.setdefault(name, what)
        self.declared |= other.declared
        self.credentials |= {c for c in other.credentials if c != drop}
        self.connections |= other.connections


class Validator:
    def __init__(self, flow: Flow, static_connections: Collection[str]) -> None:
        self.flow = flow
        self.static_connections = set(static_connections)
        self.problems: list[Problem] = []
        self.step_ids: dict[str, int] = {}

    def problem(self, line: int | None, message: str, step: str | None = None, field: str | None = None) -> None:
        self.problems.append(Problem(self.flow.source, line, message, step, field))

    def run(self) -> None:
        for spec in self.flow.inputs.values():
            if spec.default is not None and not TYPE_CHECKS[spec.type](spec.default):
                self.problem(spec.line, f"default must be {spec.type}, got {type_name(spec.default)}",
                             field=f"inputs.{spec.name}.default")
        scope = Scope()
        self.check_steps(self.flow.steps, scope)
        for name, value in self.flow.outputs.items():
            line = self.flow.output_lines.get(name)
            self.check_value(value, scope, line, None, f"outputs.{name}", sink=True)
        if self.problems:
            raise FlowError(self.problems)

    def check_steps(self, steps: list[Step], scope: Scope) -> None:
        for step in steps:
            self.check_step(step, scope)

    def check_step(self, step: Step, scope: Scope) -> None:
        if step.id in self.step_ids:
            self.problem(step.line_of("id"), f"duplicate step id (first used on line {self.step_ids[step.id]})",
                         step.id, "id")
        else:
            self.step_ids[step.id] = step.line_of("id")
        specs = STEP_KINDS[step.kind]
        for name in step.fields:
            if name not in specs and name not in COMMON_FIELDS:
                self.problem(step.line_of(name), f"unknown field for kind {step.kind}"
                             f"{suggest(name, list(specs) + list(COMMON_FIELDS))}", step.id, name)
        for name, spec in specs.items():
            present = name in step.fields or name in step.blocks
            if spec.required and not present:
                self.problem(step.line, f"missing required field for kind {step.kind}", step.id, name)
            elif name in step.fields:
                self.check_shape(step, name, spec)
        sinks = TEXT_SINKS.get(step.kind, ())
        for name, value in step.fields.items():
            if (name in specs and specs[name].shape in ("text", "value", "number", "integer")
                    and (step.kind, name) not in INNER_FIELDS):
                self.check_value(value, scope, step.line_of(name), step.id, name, sink=name in sinks)
        KIND_CHECKS[step.kind](self, step, scope)

    def check_shape(self, step: Step, name: str, spec: Any) -> None:
        value = step.fields[name]
        line = step.line_of(name)
        templated = isinstance(value, str) and ("{{" in value or "{%" in value)
        if spec.shape == "name":
            if not is_identifier(value):
                self.problem(line, f"must be a plain name (letters, digits, _; no dashes), got {value!r}"
                             if isinstance(value, str) else f"must be a name, got {type_name(value)}", step.id, name)
            elif value in RESERVED_NAMES:
                self.problem(line, f"{value!r} is a reserved name", step.id, name)
        elif spec.shape == "text":
            if not isinstance(value, str):
                self.problem(line, f"must be a string, got {type_name(value)}", step.id, name)
        elif spec.shape == "choice":
            if value not in spec.choices:
                self.problem(line, f"must be one of {', '.join(spec.choices)}, got {value!r}"
                             f"{suggest(str(value), spec.choices)}", step.id, name)
        elif spec.shape == "number" and not templated:
            if not TYPE_CHECKS["number"](value):
                self.problem(line, f"must be a number, got {type_name(value)}", step.id, name)
            elif name == "temperature" and not 0 <= value <= 2:
                self.problem(line, f"must be between 0 and 2, got {value}", step.id, name)
        elif spec.shape == "integer" and not templated:
            if not TYPE_CHECKS["integer"](value):
                self.problem(line, f"must be an integer, got {type_name(value)}", step.id, name)
            elif value < 1:
                self.problem(line, f"must be at least 1, got {value}", step.id, name)
            elif name == "concurrency" and value > MAX_CONCURRENCY:
                self.problem(line, f"must be at most {MAX_CONCURRENCY}, got {value}", step.id, name)
        elif spec.shape == "boolean" and not isinstance(value, bool):
            self.problem(line, f"must be true or false, got {type_name(value)}", step.id, name)
        elif spec.shape == "response_format":
            self.check_response_format(step, value, line)
        elif spec.shape == "tools":
            self.check_tools(step, value, line)

    def check_response_format(self, step: Step, value: Any, line: int) -> None:
        if value in ("text", "json_object"):
            return
        if not isinstance(value, dict) or value.get("type") != "json_schema":
            self.problem(line, "must be text, json_object or {type: json_schema, name, schema, strict}, got "
                         f"{value!r}" if not isinstance(value, dict) else "a mapping needs type: json_schema",
                         step.id, "response_format")
            return
        where = getattr(value, "line_of", lambda _k: line)
        for key in value:
            if key not in RESPONSE_FORMAT_KEYS:
                self.problem(where(key), f"unknown key {key!r}{suggest(key, RESPONSE_FORMAT_KEYS)}", step.id,
                             f"response_format.{key}")
        name = value.get("name")
        if not isinstance(name, str) or not TOOL_NAME.match(name):
            self.problem(where("name") if "name" in value else line, "a json_schema needs a name (letters, digits, "
                         "_ and -, at most 64)", step.id, "response_format.name")
        strict = value.get("strict", False)
        if not isinstance(strict, bool):
            self.problem(where("strict"), "must be true or false", step.id, "response_format.strict")
        if "schema" not in value:
            self.problem(line, "missing required key", step.id, "response_format.schema")
            return
        for found in schema_problems(value["schema"], strict is True):
            self.problem(line_in(value["schema"], found.path, where("schema")), found.message, step.id,
                         "response_format.schema")

    def check_tools(self, step: Step, value: Any, line: int) -> None:
        if not isinstance(value, list) or not value:
            self.problem(line, f"must be a list of function tools, got {type_name(value)}", step.id, "tools")
            return
        seen: dict[str, int] = {}
        for index, tool in enumerate(value):
            tool_line = value.line_of(index) if hasattr(value, "line_of") else line
            where = f"tools[{index}]"
            if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(
                    tool.get("function"), dict):
                self.problem(tool_line, "must be {type: function, function: {name, description, parameters}}",
                             step.id, where)
                continue
            function = tool["function"]
            for key in list(tool) + list(function):
                if key not in ("type", "function") + FUNCTION_KEYS or (key in FUNCTION_KEYS and key in tool):
                    self.problem(tool_line, f"unknown key {key!r}{suggest(key, FUNCTION_KEYS)}", step.id, where)
            name = function.get("name")
            if not isinstance(name, str) or not TOOL_NAME.match(name):
                self.problem(tool_line, "function.name must be 1-64 letters, digits, _ or -", step.id, where)
                continue
            if name in seen:
                self.problem(tool_line, f"duplicate tool name {name!r} (first on line {seen[name]})", step.id, where)
            seen[name] = tool_line
            parameters = function.get("parameters", {"type": "object", "properties": {}})
            if not isinstance(parameters, dict) or parameters.get("type") != "object":
                self.problem(tool_line, "function.parameters must be a JSON Schema of type object", step.id, where)
                continue
            for found in schema_problems(parameters, function.get("strict") is True):
                self.problem(line_in(parameters, found.path, tool_line), f"function.parameters: {found.message}",
                             step.id, where)

    def tool_names(self, step: Step) -> list[str]:
        tools = step.fields.get("tools")
        return [t["function"]["name"] for t in tools or [] if isinstance(t, dict) and isinstance(
            t.get("function"), dict) and isinstance(t["function"].get("name"), str)] if isinstance(tools, list) else []

    def check_tool_choice(self, step: Step) -> None:
        if "tool_choice" not in step.fields:
            return
        value, line = step.fields["tool_choice"], step.line_of("tool_choice")
        if "tools" not in step.fields:
            self.problem(line, "tool_choice needs `tools` in the same step", step.id, "tool_choice")
            return
        if isinstance(value, dict):
            function = value.get("function")
            value = function.get("name") if value.get("type") == "function" and isinstance(function, dict) else None
            if value is None:
                self.problem(line, "must be auto, none, required, a tool's name or {type: function, function: "
                             "{name}}", step.id, "tool_choice")
                return
        names = self.tool_names(step)
        if not isinstance(value, str) or (value not in TOOL_CHOICES and value not in names):
            self.problem(line, f"unknown tool {value!r}{suggest(str(value), names)}; expected auto, none, "
                         f"required or one of the step's tools ({', '.join(names) or 'none'})", step.id,
                         "tool_choice")

    def check_value(self, value: Any, scope: Scope, line: int | None, step: str | None, field: str,
                    sink: bool = False) -> None:
        if isinstance(value, str):
            try:
                refs = references(value)
            except TemplateError as exc:
                self.problem(line, str(exc), step, field)
                return
            for ref in refs:
                self.check_reference(ref, scope, line, step, field, sink)
        elif isinstance(value, dict):
            for item in value.values():
                self.check_value(item, scope, getattr(value, "line_of", lambda _k: line)(None) or line, step,
                                 field, sink)
        elif isinstance(value, list):
            for item in value:
                self.check_value(item, scope, line, step, field, sink)

    def check_reference(self, ref: Reference, scope: Scope, line: int | None, step: str | None, field: str,
                        sink: bool) -> None:
        if ref.root in BUILTIN_ROOTS:
            known = BUILTIN_ROOTS[ref.root] or tuple(self.flow.inputs)
            if ref.path and ref.path[0] not in known:
                what = "input" if ref.root == "inputs" else f"field of {ref.root}"
                self.problem(line, f"undefined {what} {ref.root}.{ref.path[0]}{suggest(ref.path[0], known)}",
                             step, field)
            return
        if ref.root not in scope.names:
            hint = suggest(ref.root, list(scope.names) + list(BUILTIN_ROOTS))
            if ref.root in scope.connections:
                hint = " (a connection variable is used through `dynamic_connection`, not in a template)"
            self.problem(line, f"undefined variable {ref.root!r}{hint}", step, field)
            return
        if sink and ref.root in scope.credentials and (not ref.path or ref.path[0] not in CREDENTIAL_PUBLIC_FIELDS):
            shown = ".".join((ref.root,) + ref.path)
            self.problem(line, f"{shown} holds a secret; a secret cannot be rendered into a prompt or output",
                         step, field)

    def define(self, scope: Scope, step: Step, field: str, what: str) -> str | None:
        name = step.get(field)
        if isinstance(name, str) and is_identifier(name) and name not in RESERVED_NAMES:
            scope.names[name] = what
            scope.credentials.discard(name)
            return name
        return None

    # --- one check per kind (dispatched through KIND_CHECKS) -----------------------------------------------------
    def check_declare_variable(self, step: Step, scope: Scope) -> None:
        name = step.get("name")
        if name in scope.declared:
            self.problem(step.line_of("name"), f"variable {name!r} is already declared", step.id, "name")
        var_type, value = step.get("type"), step.fields.get("value")
        if var_type in INPUT_TYPES and "value" in step.fields and not (isinstance(value, str) and "{{" in value):
            if not TYPE_CHECKS[var_type](value):
                self.problem(step.line_of("value"), f"must be {var_type}, got {type_name(value)}", step.id, "value")
        if self.define(scope, step, "name", "variable"):
            scope.declared.add(name)

    def check_set_variable(self, step: Step, scope: Scope) -> None:
        name = step.get("name")
        if isinstance(name, str) and name not in scope.declared:
            self.problem(step.line_of("name"), f"variable {name!r} is not declared; add a declare_variable step "
                         f"before it{suggest(name, scope.declared)}", step.id, "name")

    def check_load_credential(self, step: Step, scope: Scope) -> None:
        name = self.define(scope, step, "result", "credential")
        if name:
            scope.credentials.add(name)

    def check_create_azure_ai_connection(self, step: Step, scope: Scope) -> None:
        if step.get("auth") != "entra" and "api_key" not in step.fields:
            self.problem(step.line, "missing required field (or set `auth: entra` for keyless)", step.id, "api_key")
        endpoint = step.fields.get("endpoint")
        if isinstance(endpoint, str) and "{{" not in endpoint and not endpoint.startswith(("https://", "http://")):
            self.problem(step.line_of("endpoint"), f"must be an https:// URL, got {endpoint!r}", step.id, "endpoint")
        api_key = step.fields.get("api_key")
        if isinstance(api_key, str) and api_key and "{{" not in api_key:
            self.problem(step.line_of("api_key"), "a literal API key in a flow file is not allowed; load it with "
                         "load_credential and use a template", step.id, "api_key")
        name = step.get("connection_variable")
        if isinstance(name, str) and is_identifier(name):
            scope.connections.add(name)

    def check_chat_completion(self, step: Step, scope: Scope) -> None:
        connection = step.fields.get("connection")
        known = ", ".join(sorted(self.static_connections)) or "none"
        if isinstance(connection, str) and connection not in self.static_connections:
            near = difflib.get_close_matches(connection, list(self.static_connections), n=1, cutoff=0.8)
            if near:
                self.problem(step.line_of("connection"), f"unknown static connection {connection!r} (did you mean "
                             f"{near[0]!r}?); known: {known}", step.id, "connection")
            elif not CREDENTIAL_NAME.match(connection):
                self.problem(step.line_of("connection"), f"{connection!r} is neither a static connection (known: "
                             f"{known}) nor a tenant credential name (lowercase letters, digits, _ and -)",
                             step.id, "connection")
        elif connection is None and "dynamic_connection" not in step.fields and (
            "default" not in self.static_connections
        ):
            self.problem(step.line, "no connection: set `connection` or `dynamic_connection`", step.id, "connection")
        dynamic = step.fields.get("dynamic_connection")
        if isinstance(dynamic, str) and dynamic not in scope.connections:
            self.problem(step.line_of("dynamic_connection"), f"undefined dynamic connection {dynamic!r}: no "
                         f"create_azure_ai_connection step before it sets connection_variable: {dynamic}"
                         f"{suggest(dynamic, scope.connections)}", step.id, "dynamic_connection")
        model = step.fields.get("model")
        if model is not None and not (isinstance(model, str) and "{{" in model) and not is_model_name(model):
            self.problem(step.line_of("model"), f"not a deployment name ({MODEL_NAME_RULE})", step.id, "model")
        if "chat_template" in step.fields:
            for name in ("system_prompt", "user_prompt", "history", "context", "prompt_template"):
                if name in step.fields:
                    self.problem(step.line_of(name), "chat_template gives every message; remove this field or "
                                 "chat_template", step.id, name)
        elif not any(k in step.fields for k in ("user_prompt", "history", "prompt_template")):
            self.problem(step.line, "a chat_completion needs `user_prompt`, `history`, `prompt_template` or "
                         "`chat_template`", step.id, "user_prompt")
        template = step.fields.get("prompt_template")
        if isinstance(template, str) and "@@userPrompt" in template and "user_prompt" not in step.fields:
            self.problem(step.line_of("prompt_template"), "uses @@userPrompt but the step has no user_prompt",
                         step.id, "prompt_template")
        if isinstance(template, str) and "@@context" in template and "context" not in step.fields:
            self.problem(step.line_of("prompt_template"), "uses @@context but the step has no context",
                         step.id, "prompt_template")
        self.check_tool_choice(step)
        self.define(scope, step, "result", "chat result")

    def check_if(self, step: Step, scope: Scope) -> None:
        for block in ("then", "else"):
            if block in step.blocks:
                inner = scope.child()
                self.check_steps(step.blocks[block], inner)
                scope.absorb(inner)

    def check_for_each(self, step: Step, scope: Scope) -> None:
        inner = scope.child()
        loop_var = self.define(inner, step, "as", "loop variable")
        body = step.blocks.get("steps", [])
        if step.get("concurrency") != 1:
            self.check_concurrent_body(step, body, scope.declared)
        self.check_steps(body, inner)
        if "output" in step.fields:
            self.check_value(step.fields["output"], inner, step.line_of("output"), step.id, "output", sink=True)
        scope.absorb(inner, drop=loop_var)
        self.define(scope, step, "result", "loop results")

    def check_concurrent_body(self, loop: Step, body: list[Step], outer: set[str]) -> None:
        """Concurrent iterations each see their own copy of the scope: writing an outer variable would race."""
        pending = list(body)
        while pending:
            inner = pending.pop(0)
            if inner.kind == "set_variable" and inner.get("name") in outer:
                self.problem(inner.line_of("name"), f"cannot set {inner.get('name')!r}, declared outside for_each "
                             f"{loop.id}, whose iterations run concurrently (concurrency "
                             f"{loop.get('concurrency')}); collect values with `output` and `result` instead",
                             inner.id, "name")
            elif inner.kind == "return":
                self.problem(inner.line, f"return is not allowed inside for_each {loop.id}, whose iterations "
                             "run concurrently", inner.id)
            for block in inner.blocks.values():
                pending.extend(block)

    def check_try(self, step: Step, scope: Scope) -> None:
        inner = scope.child()
        self.check_steps(step.blocks.get("steps", []), inner)
        scope.absorb(inner)
        if "catch" in step.blocks:
            handler = scope.child()
            error_var = self.define(handler, step, "error_variable", "error")
            self.check_steps(step.blocks["catch"], handler)
            scope.absorb(handler, drop=error_var)

    def check_return(self, step: Step, scope: Scope) -> None:
        return None


KIND_CHECKS: dict[str, Callable[[Validator, Step, Scope], None]] = {
    "declare_variable": Validator.check_declare_variable,
    "set_variable": Validator.check_set_variable,
    "load_credential": Validator.check_load_credential,
    "create_azure_ai_connection": Validator.check_create_azure_ai_connection,
    "chat_completion": Validator.check_chat_completion,
    "if": Validator.check_if,
    "for_each": Validator.check_for_each,
    "try": Validator.check_try,
    "return": Validator.check_return,
}


def validate_flow(flow: Flow, static_connections: Collection[str]) -> Flow:
    """Returns the flow when valid; raises FlowError listing every problem otherwise."""
    Validator(flow, static_connections).run()
    return flow
