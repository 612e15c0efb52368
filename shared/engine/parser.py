"""Definition stage: flow YAML text → Flow, keeping source lines. Structural problems only; semantics are
checked by the validator. Raises FlowError listing every problem found."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from shared.engine.errors import FlowError, Problem
from shared.engine.model import CHILD_BLOCKS, INPUT_TYPES, STEP_KINDS, Flow, InputSpec, Step
from shared.engine.yaml_source import LocatedDict, LocatedList, YamlSourceError, load_located

TOP_LEVEL_KEYS = ("id", "description", "inputs", "steps", "outputs")
EXPRESSION_FIELDS = ("condition", "items")
INPUT_KEYS = ("type", "required", "default", "description")


def parse_flow_file(path: str | Path) -> Flow:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise FlowError([Problem(str(path), None, "file is not UTF-8 text")]) from None
    except OSError as exc:
        raise FlowError([Problem(str(path), None, f"cannot read file: {exc.strerror or exc}")]) from None
    return parse_flow(text, str(path))


def parse_flow(text: str, source: str = "<flow>") -> Flow:
    problems: list[Problem] = []
    if not text.strip():
        raise FlowError([Problem(source, 1, "empty file: a flow needs `id` and `steps`")])
    try:
        doc = load_located(text)
    except YamlSourceError as exc:
        raise FlowError([Problem(source, exc.line, exc.message)]) from None
    if doc is None:
        raise FlowError([Problem(source, 1, "empty file: a flow needs `id` and `steps`")])
    if not isinstance(doc, LocatedDict):
        raise FlowError([Problem(source, 1, f"a flow file must be a mapping, got {type_name(doc)}")])

    def problem(line: int | None, message: str, step: str | None = None, field: str | None = None) -> None:
        problems.append(Problem(source, line, message, step, field))

    for key in doc:
        if key not in TOP_LEVEL_KEYS:
            problem(doc.line_of(key), f"unknown top-level key {key!r}{suggest(key, TOP_LEVEL_KEYS)}", field=key)

    flow_id = doc.get("id")
    if flow_id is None:
        problem(1, "missing required key `id`", field="id")
        flow_id = Path(source).stem
    elif not isinstance(flow_id, str) or not is_slug(flow_id):
        problem(doc.line_of("id"), "`id` must be a slug (letters, digits, - and _)", field="id")
        flow_id = str(flow_id)

    description = doc.get("description") or ""
    if not isinstance(description, str):
        problem(doc.line_of("description"), "must be a string", field="description")
        description = ""

    flow = Flow(
        id=flow_id,
        source=source,
        content_hash=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        description=description,
    )
    flow.inputs = parse_inputs(doc, problem)
    if "steps" not in doc:
        problem(1, "missing required key `steps`", field="steps")
    else:
        flow.steps = parse_steps(doc["steps"], doc.line_of("steps"), "steps", None, problem)
        if isinstance(doc["steps"], list) and not doc["steps"]:
            problem(doc.line_of("steps"), "a flow needs at least one step", field="steps")
    outputs = doc.get("outputs")
    if outputs is not None:
        if isinstance(outputs, LocatedDict):
            flow.outputs = dict(outputs)
            flow.output_lines = dict(outputs.key_lines)
        else:
            problem(doc.line_of("outputs"), f"must be a mapping of name: value, got {type_name(outputs)}",
                    field="outputs")
    if problems:
        raise FlowError(problems)
    return flow


def parse_inputs(doc: LocatedDict, problem: Any) -> dict[str, InputSpec]:
    raw = doc.get("inputs")
    if raw is None:
        return {}
    if not isinstance(raw, LocatedDict):
        problem(doc.line_of("inputs"), f"must be a mapping of input name: spec, got {type_name(raw)}",
                field="inputs")
        return {}
    inputs: dict[str, InputSpec] = {}
    for name, spec in raw.items():
        line = raw.line_of(name)
        where = f"inputs.{name}"
        if not is_identifier(name):
            problem(line, f"input name {name!r} must be an identifier", field=where)
            continue
        if isinstance(spec, str):  # shorthand `name: string`
            spec = LocatedDict({"type": spec})
            spec.line, spec.key_lines = line, {"type": line}
        if spec is None:
            spec = LocatedDict()
            spec.line, spec.key_lines = line, {}
        if not isinstance(spec, LocatedDict):
            problem(line, f"must be a mapping like {{type: string}}, got {type_name(spec)}", field=where)
            continue
        for key in spec:
            if key not in INPUT_KEYS:
                problem(spec.line_of(key), f"unknown key {key!r}{suggest(key, INPUT_KEYS)}", field=f"{where}.{key}")
        input_type = spec.get("type", "string")
        if input_type not in INPUT_TYPES:
            problem(spec.line_of("type"), f"unknown input type {input_type!r}; expected one of "
                    f"{', '.join(INPUT_TYPES)}{suggest(str(input_type), INPUT_TYPES)}", field=f"{where}.type")
            continue
        required = spec.get("required", False)
        if not isinstance(required, bool):
            problem(spec.line_of("required"), "must be true or false", field=f"{where}.required")
            required = False
        inputs[name] = InputSpec(name, input_type, required, spec.get("default"), spec.get("description"), line)
    return inputs


def parse_steps(raw: Any, line: int, where: str, parent: str | None, problem: Any) -> list[Step]:
    if not isinstance(raw, LocatedList):
        problem(line, f"`{where}` must be a list of steps, got {type_name(raw)}", step=parent,
                field=None if parent is None else where)
        return []
    steps: list[Step] = []
    for index, item in enumerate(raw):
        item_line = raw.line_of(index)
        if not isinstance(item, LocatedDict):
            problem(item_line, f"each entry of `{where}` must be a step mapping, got {type_name(item)}", step=parent)
            continue
        step_id = item.get("id")
        label = step_id if isinstance(step_id, str) and step_id else f"#{index + 1} of {where}"
        if step_id is None:
            problem(item.line, "missing required field", step=label, field="id")
        elif not isinstance(step_id, str) or not is_step_id(step_id):
            problem(item.line_of("id"), "step id must start with a letter (letters, digits, _ and -)", step=label,
                    field="id")
        kind = item.get("kind")
        if kind is None:
            problem(item.line, "missing required field", step=label, field="kind")
            continue
        if kind not in STEP_KINDS:
            problem(item.line_of("kind"), f"unknown kind {kind!r}{suggest(str(kind), STEP_KINDS)}; "
                    f"expected one of {', '.join(STEP_KINDS)}", step=label, field="kind")
            continue
        fields = {k: v for k, v in item.items() if k not in ("id", "kind")}
        for name in EXPRESSION_FIELDS:
            value = fields.get(name)
            if isinstance(value, str) and "{{" not in value and "{%" not in value:
                fields[name] = "{{ " + value + " }}"  # `condition: inputs.n > 3` reads as an expression
        step = Step(id=str(step_id or label), kind=kind, fields=fields, line=item.line,
                    field_lines=dict(item.key_lines))
        for block in CHILD_BLOCKS:
            spec = STEP_KINDS[kind].get(block)
            if spec is not None and spec.shape == "steps" and block in item:
                step.blocks[block] = parse_steps(item[block], item.line_of(block), block, step.id, problem)
                del step.fields[block]
        steps.append(step)
    return steps


def is_slug(text: str) -> bool:
    return bool(text) and len(text) <= 100 and all(c.isalnum() or c in "-_." for c in text) and text[0].isalnum()


def is_identifier(text: Any) -> bool:
    """A name templates can read: letters, digits and _, not starting with a digit."""
    return isinstance(text, str) and text.isidentifier() and text.isascii()


def is_step_id(text: str) -> bool:
    return bool(text) and text[0].isalpha() and all(c.isalnum() or c in "_-" for c in text) and text.isascii()


def type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def suggest(word: str, choices: Any) -> str:
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
