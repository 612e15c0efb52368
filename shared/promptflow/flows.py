"""Import a prompt flow folder (`flow.dag.yaml` + Jinja prompt files) as one Tenantflow flow file.

Converted:
- `inputs` (string, int, double, bool, list, object; default, description) and `outputs` (`reference`);
- `llm` nodes with `api: chat` → `chat_completion` with a `chat_template` (the prompt file, whose `# system:` /
  `# user:` / `# assistant:` role lines split the messages), `connection`, `deployment_name` (or `model`),
  `temperature`, `max_tokens` and `response_format` (text / json_object); other model parameters are converted
  away only when they hold the API's default;
- `prompt` nodes → a string variable rendered from the prompt file;
- node inputs, `${inputs.x}` / `${flow.x}` and `${node.output}` references (`${node.output.key}` on a json_object
  llm node), bound by name around the prompt with `{% with %}`;
- `activate: {when, is}` → an `if` (a node that may be skipped holds null when it is, as in prompt flow);
- `use_variants` → the node's default variant; nodes are ordered by their references (prompt flow runs a DAG).

Refused, each listed with file:line and why: `python` nodes and any other node type (Tenantflow flows run no
code), `api: completion`, other variants, aggregation nodes, non-default model parameters, `additional_includes`
and unknown keys. The import fails on any of them unless `partial`, which writes the flow without them (a refused
node becomes a variable holding null, named like its result, so that references still resolve).

Malformed input (YAML syntax, a missing prompt file, a Jinja syntax error, a reference to an unknown node or
input, a cycle) raises PromptFlowError with file:line for every finding.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jinja2 import Environment, TemplateSyntaxError, meta

from shared.engine.errors import FlowError
from shared.engine.model import RESERVED_NAMES
from shared.engine.parser import parse_flow
from shared.engine.validator import CREDENTIAL_NAME, validate_flow
from shared.engine.yaml_source import LocatedDict, LocatedList, YamlSourceError, load_located

DAG_FILES = ("flow.dag.yaml", "flow.dag.yml")
INPUT_TYPES = {"string": "string", "int": "integer", "double": "number", "bool": "boolean", "list": "list",
               "object": "object"}
TOP_LEVEL = ("$schema", "inputs", "outputs", "nodes", "node_variants", "environment", "additional_includes",
             "description")
NODE_KEYS = ("name", "type", "source", "inputs", "connection", "api", "provider", "module", "activate",
             "use_variants", "aggregation", "description", "comment", "tool")
REFERENCE = re.compile(r"^\$\{(?P<root>[A-Za-z_][\w-]*)\.(?P<path>[A-Za-z_][\w]*(?:\.[\w]+)*)\}$")
LLM_PARAMETERS = {"deployment_name", "model", "temperature", "max_tokens", "response_format"}
DEFAULT_PARAMETERS: dict[str, tuple[Any, ...]] = {  # converted away only when they hold the API's default
    "top_p": (1, 1.0, "1", "1.0"), "presence_penalty": (0, 0.0, "0", "0.0"), "frequency_penalty": (0, 0.0, "0", "0.0"),
    "stop": (None, "", "[]"), "logit_bias": (None, "", "{}"), "user": (None, ""), "n": (1, "1"),
    "echo": (False, "false", "False"), "detail": ("auto",), "seed": (None, ""), "suffix": (None, ""),
    "best_of": (1, "1"), "logprobs": (None, ""), "tools": (None, "", "[]"), "tool_choice": (None, ""),
    "functions": (None, "", "[]"), "function_call": (None, ""),
}


@dataclass(frozen=True)
class Finding:
    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}" if self.line else f"{self.file}: {self.message}"


class PromptFlowError(Exception):
    """The prompt flow folder is malformed; `findings` name file:line."""

    def __init__(self, findings: list[Finding]) -> None:
        self.findings = findings
        super().__init__("\n".join(str(f) for f in findings))


@dataclass
class ImportResult:
    flow_id: str
    text: str  # the Tenantflow flow YAML
    refused: list[Finding]  # what was not converted (left out when partial)


@dataclass
class Node:
    name: str
    kind: str  # llm | prompt | python | …
    spec: LocatedDict
    line: int
    step_id: str = ""
    variable: str = ""
    json_output: bool = False
    refused: bool = False
    conditional: bool = False
    dependencies: list[str] = field(default_factory=list)


class Importer:
    def __init__(self, folder: Path, static_connections: Collection[str]) -> None:
        self.folder = folder
        self.static_connections = set(static_connections)
        self.errors: list[Finding] = []
        self.refused: list[Finding] = []
        self.dag_file = ""
        self.inputs: dict[str, Any] = {}
        self.nodes: dict[str, Node] = {}
        self.step_ids: set[str] = set()
        self.variables: set[str] = set(RESERVED_NAMES)
        self.jinja = Environment(autoescape=False)  # noqa: S701 - parsed only (syntax and variable names)

    def error(self, line: int | None, message: str, file: str | None = None) -> None:
        self.errors.append(Finding(file or self.dag_file, line, message))

    def refuse(self, line: int | None, message: str) -> None:
        self.refused.append(Finding(self.dag_file, line, message))

    # --- reading ---------------------------------------------------------------------------------------------
    def load(self) -> LocatedDict:
        path = next((self.folder / name for name in DAG_FILES if (self.folder / name).is_file()), None)
        if path is None:
            raise PromptFlowError([Finding(str(self.folder), None, "not a prompt flow folder: no flow.dag.yaml")])
        self.dag_file = str(path)
        try:
            doc = load_located(path.read_text(encoding="utf-8"))
        except YamlSourceError as exc:
            raise PromptFlowError([Finding(self.dag_file, exc.line, exc.message)]) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise PromptFlowError([Finding(self.dag_file, None, f"cannot read: {exc}")]) from None
        if not isinstance(doc, LocatedDict):
            raise PromptFlowError([Finding(self.dag_file, 1, "flow.dag.yaml must be a mapping")])
        return doc

    def convert(self) -> dict[str, Any]:
        doc = self.load()
        for key in doc:
            if key == "additional_includes" and doc[key]:
                self.refuse(doc.line_of(key), "additional_includes: files from outside the folder are not imported")
            elif key not in TOP_LEVEL:
                self.refuse(doc.line_of(key), f"unknown top-level key {key!r}")
        flow: dict[str, Any] = {"id": slug(self.folder.resolve().name),
                                "description": f"Imported from prompt flow {self.folder.resolve().name}"}
        self.inputs = self.convert_inputs(doc)
        if self.inputs:
            flow["inputs"] = self.inputs
        nodes = self.read_nodes(doc)
        ordered = self.ordered(nodes)
        if self.errors:
            raise PromptFlowError(self.errors)
        steps: list[dict[str, Any]] = []
        for node in ordered:
            steps.extend(self.convert_node(node))
        flow["steps"] = steps
        outputs = self.convert_outputs(doc)
        if outputs:
            flow["outputs"] = outputs
        if self.errors:
            raise PromptFlowError(self.errors)
        return flow

    def convert_inputs(self, doc: LocatedDict) -> dict[str, Any]:
        raw = doc.get("inputs") or {}
        if not isinstance(raw, LocatedDict):
            self.error(doc.line_of("inputs"), "inputs must be a mapping")
            return {}
        inputs: dict[str, Any] = {}
        for name, spec in raw.items():
            line = raw.line_of(name)
            if not isinstance(name, str) or not name.isidentifier():
                self.error(line, f"input {name!r}: the name must be an identifier")
                continue
            spec = spec if isinstance(spec, dict) else {"type": spec}
            pf_type = spec.get("type", "string")
            if pf_type not in INPUT_TYPES:
                self.refuse(line, f"input {name}: type {pf_type!r} has no Tenantflow equivalent")
                pf_type = "object"
            converted: dict[str, Any] = {"type": INPUT_TYPES[pf_type]}
            if "default" in spec and spec["default"] is not None:
                converted["default"] = spec["default"]
            else:
                converted["required"] = True
            if spec.get("description"):
                converted["description"] = str(spec["description"])
            inputs[name] = converted
        return inputs

    def read_nodes(self, doc: LocatedDict) -> list[Node]:
        raw = doc.get("nodes")
        if not isinstance(raw, LocatedList) or not raw:
            self.error(doc.line_of("nodes") if "nodes" in doc else 1, "a flow needs a list of `nodes`")
            return []
        variants = doc.get("node_variants") or {}
        nodes: list[Node] = []
        for index, spec in enumerate(raw):
            line = raw.line_of(index)
            if not isinstance(spec, LocatedDict) or not isinstance(spec.get("name"), str) or not spec["name"]:
                self.error(line, "each node needs a `name`")
                continue
            name = spec["name"]
            if name in self.nodes:
                self.error(spec.line_of("name"), f"node {name}: duplicate name (first on line {self.nodes[name].line})")
                continue
            if spec.get("use_variants"):
                spec = self.default_variant(name, spec, variants, line)
                if spec is None:
                    continue
            node = Node(name, str(spec.get("type") or ""), spec, line)
            node.step_id = unique(step_id_of(name), self.step_ids)
            node.variable = unique(identifier_of(name), self.variables)
            node.conditional = "activate" in spec
            node.json_output = self.is_json(spec)
            for key in spec:
                if key not in NODE_KEYS:
                    self.refuse(spec.line_of(key), f"node {name}: unknown key {key!r}")
            self.nodes[name] = node
            nodes.append(node)
        for node in nodes:
            node.dependencies = self.dependencies(node)
        return nodes

    def default_variant(self, name: str, spec: LocatedDict, variants: Any, line: int) -> LocatedDict | None:
        entry = variants.get(name) if isinstance(variants, dict) else None
        default = entry.get("default_variant_id") if isinstance(entry, dict) else None
        variant = (entry.get("variants") or {}).get(default) if isinstance(entry, dict) else None
        if not isinstance(variant, dict) or not isinstance(variant.get("node"), LocatedDict):
            self.error(line, f"node {name}: use_variants, but node_variants.{name} has no default variant node")
            return None
        others = sorted(set(entry.get("variants") or {}) - {default})  # type: ignore[union-attr]
        if others:
            self.refuse(line, f"node {name}: variants {', '.join(others)} are not imported (the default variant "
                        f"{default} is)")
        merged = LocatedDict({**variant["node"], "name": name})
        merged.line, merged.key_lines = variant["node"].line, {**variant["node"].key_lines, "name": line}
        return merged

    def is_json(self, spec: LocatedDict) -> bool:
        inputs = spec.get("inputs") or {}
        response_format = inputs.get("response_format") if isinstance(inputs, dict) else None
        kind = response_format.get("type") if isinstance(response_format, dict) else response_format
        return kind == "json_object"

    def references_of(self, node: Node) -> list[tuple[str, int]]:
        found: list[tuple[str, int]] = []
        inputs = node.spec.get("inputs") or {}
        if isinstance(inputs, LocatedDict):
            for key, value in inputs.items():
                match = REFERENCE.match(value) if isinstance(value, str) else None
                if match:
                    found.append((match.group("root"), inputs.line_of(key)))
        activate = node.spec.get("activate")
        if isinstance(activate, LocatedDict):
            match = REFERENCE.match(str(activate.get("when", "")))
            if match:
                found.append((match.group("root"), activate.line_of("when")))
        return found

    def dependencies(self, node: Node) -> list[str]:
        names: list[str] = []
        for root, line in self.references_of(node):
            if root in ("inputs", "flow"):
                continue
            if root not in self.nodes:
                self.error(line, f"node {node.name}: reference to unknown node {root!r}")
            elif root == node.name:
                self.error(line, f"node {node.name}: refers to its own output")
            elif root not in names:
                names.append(root)
        return names

    def ordered(self, nodes: list[Node]) -> list[Node]:
        """Dependencies first; otherwise file order."""
        done: list[Node] = []
        placed: set[str] = set()
        pending = list(nodes)
        while pending:
            ready = next((n for n in pending if all(d in placed for d in n.dependencies)), None)
            if ready is None:
                names = ", ".join(n.name for n in pending)
                self.error(pending[0].line, f"the nodes {names} refer to each other in a cycle")
                break
            pending.remove(ready)
            placed.add(ready.name)
            done.append(ready)
        return done

    # --- references --------------------------------------------------------------------------------------------
    def expression(self, reference: str, line: int, where: str) -> str | None:
        """`${…}` → a Jinja expression, or None (a finding is recorded)."""
        match = REFERENCE.match(reference)
        if match is None:
            self.error(line, f"{where}: {reference!r} is not a reference like ${{inputs.x}} or ${{node.output}}")
            return None
        root, path = match.group("root"), match.group("path").split(".")
        if root in ("inputs", "flow"):
            if path[0] not in self.inputs:
                self.error(line, f"{where}: unknown flow input {path[0]!r}")
                return None
            return "inputs." + ".".join(path)
        node = self.nodes.get(root)
        if node is None:
            self.error(line, f"{where}: reference to unknown node {root!r}")
            return None
        if path[0] != "output":
            self.error(line, f"{where}: {reference}: a node gives `output` only")
            return None
        rest = path[1:]
        if node.kind == "llm" and not node.refused:
            if rest and not node.json_output:
                self.refuse(line, f"{where}: {reference}: node {root} answers text; only a json_object answer has "
                            "keys")
                rest = []
            base = node.variable + (".json" if rest else ".content")
        elif node.kind == "prompt" and not node.refused:
            if rest:
                self.refuse(line, f"{where}: {reference}: node {root} gives text, which has no keys")
                rest = []
            base = node.variable
        else:
            base = node.variable
        expression = ".".join([base, *rest])
        if node.conditional or node.refused:
            return f"({expression} if {node.variable} is not none else none)"
        return expression

    # --- nodes -------------------------------------------------------------------------------------------------
    def convert_node(self, node: Node) -> list[dict[str, Any]]:
        spec = node.spec
        if spec.get("aggregation"):
            self.refuse(node.line, f"node {node.name}: aggregation nodes (batch runs) are not imported")
            node.refused = True
        elif node.kind == "python":
            source = spec.get("source") or {}
            what = source.get("path") or source.get("tool") or "code" if isinstance(source, dict) else "code"
            self.refuse(node.line, f"node {node.name}: python node ({what}): Tenantflow flows run no code")
            node.refused = True
        elif node.kind not in ("llm", "prompt"):
            self.refuse(node.line, f"node {node.name}: node type {node.kind or '(none)'!r} is not imported "
                        "(llm and prompt are)")
            node.refused = True
        elif node.kind == "llm" and spec.get("api", "chat") != "chat":
            self.refuse(spec.line_of("api"), f"node {node.name}: api {spec.get('api')!r}: only the chat API is "
                        "imported")
            node.refused = True
        if node.refused:
            return [{"id": node.step_id, "kind": "declare_variable", "name": node.variable, "type": "object",
                     "description": f"prompt flow node {node.name} was not imported: null"}]
        step = self.convert_llm(node) if node.kind == "llm" else self.convert_prompt(node)
        if step is None:
            return []
        if not node.conditional:
            return [step]
        activate = spec["activate"]
        if not isinstance(activate, LocatedDict) or "when" not in activate or "is" not in activate:
            self.error(spec.line_of("activate"), f"node {node.name}: activate needs `when` and `is`")
            return []
        when = self.expression(str(activate["when"]), activate.line_of("when"), f"node {node.name}: activate.when")
        if when is None:
            return []
        unset = {"id": unique(f"{node.step_id}-skipped", self.step_ids), "kind": "declare_variable",
                 "name": node.variable, "type": "object" if node.kind == "llm" else "string",
                 "description": f"null unless node {node.name} is activated"}
        condition = f"{{{{ {when} == {jinja_literal(activate['is'])} }}}}"
        gate = {"id": unique(f"{node.step_id}-activate", self.step_ids), "kind": "if", "condition": condition,
                "then": [step]}
        if node.kind == "prompt":  # a prompt node declares its variable: inside the `if`, it is set instead
            step.update(kind="set_variable")
            step.pop("type", None)
        return [unset, gate]

    def prompt_text(self, node: Node) -> str | None:
        """The prompt file's text wrapped in `{% with %}` binding the node's inputs by name."""
        source = node.spec.get("source")
        line = node.spec.line_of("source")
        if not isinstance(source, dict) or not isinstance(source.get("path"), str):
            self.error(line, f"node {node.name}: source needs a `path` to the prompt file")
            return None
        if source.get("type", "code") != "code":
            self.refuse(line, f"node {node.name}: a {source.get('type')} source is not imported")
            return None
        path = (self.folder / source["path"])
        shown = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            self.error(source.line_of("path") if isinstance(source, LocatedDict) else line,
                       f"node {node.name}: prompt file {source['path']} not found or not UTF-8 text")
            return None
        try:
            used = meta.find_undeclared_variables(self.jinja.parse(text))
        except TemplateSyntaxError as exc:
            self.error(exc.lineno, f"Jinja syntax error: {exc.message}", shown)
            return None
        inputs = node.spec.get("inputs") or LocatedDict()
        bindings: list[str] = []
        for key, value in inputs.items():
            if node.kind == "llm" and (key in LLM_PARAMETERS or key in DEFAULT_PARAMETERS):
                continue
            if not str(key).isidentifier():
                self.error(inputs.line_of(key), f"node {node.name}: input {key!r} is not a name a prompt can use")
                continue
            match = REFERENCE.match(value) if isinstance(value, str) else None
            expression = (self.expression(value, inputs.line_of(key), f"node {node.name}: input {key}")
                          if match else jinja_literal(value))
            if expression is not None:
                bindings.append(f"{key}={expression}")
        missing = sorted(used - {b.split("=", 1)[0] for b in bindings} - {"loop"})
        for name in missing:
            self.error(first_line_of(text, name), f"the prompt uses {name!r}, which node {node.name} does not give "
                       "as an input", shown)
        if node.kind == "llm" and not re.search(r"(?im)^[ \t]*#?[ \t]*(system|user|assistant)[ \t]*:[ \t]*$", text):
            self.error(1, "the prompt has no role line (# system:, # user: or # assistant:); the chat API needs "
                       "one", shown)
        body = text if text.endswith("\n") else text + "\n"
        return f"{{% with {', '.join(bindings)} -%}}\n{body}{{%- endwith %}}\n" if bindings else body

    def convert_prompt(self, node: Node) -> dict[str, Any] | None:
        prompt = self.prompt_text(node)
        if prompt is None:
            return None
        return {"id": node.step_id, "kind": "declare_variable", "name": node.variable, "type": "string",
                "value": prompt}

    def convert_llm(self, node: Node) -> dict[str, Any] | None:
        spec = node.spec
        inputs = spec.get("inputs") or LocatedDict()
        step: dict[str, Any] = {"id": node.step_id, "kind": "chat_completion"}
        connection = spec.get("connection")
        if not isinstance(connection, str) or not connection:
            self.refuse(node.line, f"node {node.name}: no `connection` (provider-only llm nodes are not imported)")
        elif connection not in self.static_connections and not CREDENTIAL_NAME.match(connection):
            self.refuse(spec.line_of("connection"), f"node {node.name}: connection {connection!r} is not a static "
                        "connection and not a credential name (lowercase letters, digits, _ and -)")
        else:
            step["connection"] = connection
        model = inputs.get("deployment_name") or inputs.get("model")
        if not model:
            self.error(node.line, f"node {node.name}: needs inputs.deployment_name (or inputs.model)")
            return None
        step["model"] = self.parameter(node, "deployment_name" if "deployment_name" in inputs else "model", str)
        for name, target, kind in (("temperature", "temperature", float), ("max_tokens", "max_completion_tokens",
                                                                           int)):
            if inputs.get(name) not in (None, ""):
                value = self.parameter(node, name, kind)
                if value is not None:
                    step[target] = value
        if node.json_output:
            step["response_format"] = "json_object"
        for name, value in inputs.items():
            if name in DEFAULT_PARAMETERS and value not in DEFAULT_PARAMETERS[name]:
                self.refuse(inputs.line_of(name), f"node {node.name}: {name}: {value!r} is not imported (only its "
                            "default is)")
        prompt = self.prompt_text(node)
        if prompt is None:
            return None
        step["chat_template"] = prompt
        step["result"] = node.variable
        return step

    def parameter(self, node: Node, name: str, kind: type) -> Any:
        inputs = node.spec["inputs"]
        value = inputs[name]
        if isinstance(value, str) and REFERENCE.match(value):
            expression = self.expression(value, inputs.line_of(name), f"node {node.name}: input {name}")
            return f"{{{{ {expression} }}}}" if expression else None
        try:
            return kind(value)
        except (TypeError, ValueError):
            self.error(inputs.line_of(name), f"node {node.name}: {name} must be a {kind.__name__}, got {value!r}")
            return None

    def convert_outputs(self, doc: LocatedDict) -> dict[str, str]:
        raw = doc.get("outputs") or {}
        if not isinstance(raw, LocatedDict):
            self.error(doc.line_of("outputs"), "outputs must be a mapping")
            return {}
        outputs: dict[str, str] = {}
        for name, spec in raw.items():
            line = raw.line_of(name)
            reference = spec.get("reference") if isinstance(spec, dict) else None
            if not isinstance(reference, str):
                self.error(line, f"output {name}: needs a `reference` like ${{node.output}}")
                continue
            expression = self.expression(reference, spec.line_of("reference") if isinstance(spec, LocatedDict)
                                         else line, f"output {name}")
            if expression is not None:
                outputs[str(name)] = f"{{{{ {expression} }}}}"
        return outputs


def import_promptflow(folder: Path, static_connections: Collection[str], partial: bool = False) -> ImportResult:
    """Converts the folder. Raises PromptFlowError when it is malformed, or — unless `partial` — when something
    cannot be converted (then `findings` are the refusals)."""
    importer = Importer(folder, static_connections)
    flow = importer.convert()
    if importer.refused and not partial:
        raise PromptFlowError(importer.refused)
    header = f"# Imported from prompt flow {importer.dag_file} by `tenantflow import promptflow`.\n"
    for finding in importer.refused:
        header += f"# not imported: {finding}\n"
    text = header + dump_yaml(flow)
    try:
        validate_flow(parse_flow(text, f"{flow['id']}.yaml"), static_connections)
    except FlowError as exc:  # what the importer wrote must validate; say what did not
        raise PromptFlowError([Finding(importer.dag_file, None, f"the converted flow is invalid: {p}")
                               for p in exc.problems]) from None
    return ImportResult(flow["id"], text, importer.refused)


def unique(name: str, taken: set[str]) -> str:
    candidate, number = name, 2
    while candidate in taken:
        candidate, number = f"{name}_{number}", number + 1
    taken.add(candidate)
    return candidate


def slug(text: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "imported-flow"
    return cleaned if cleaned[0].isalnum() else "flow-" + cleaned


def step_id_of(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "_", name)
    return cleaned if cleaned[:1].isalpha() else "node_" + cleaned


def identifier_of(name: str) -> str:
    cleaned = re.sub(r"\W+", "_", name)
    return cleaned if cleaned.isidentifier() and cleaned.isascii() else "node_" + cleaned


def jinja_literal(value: Any) -> str:
    """A YAML value as a Jinja literal (JSON is valid Jinja for strings, numbers, lists and mappings)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, ensure_ascii=False)


def first_line_of(text: str, name: str) -> int:
    for number, line in enumerate(text.splitlines(), 1):
        if re.search(rf"\b{re.escape(name)}\b", line):
            return number
    return 1


class FlowDumper(yaml.SafeDumper):
    """Multi-line strings as `|` blocks, so that prompts read as they were written."""


def represent_text(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text and not any(line != line.rstrip() for line in text.splitlines()) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


FlowDumper.add_representer(str, represent_text)
FlowDumper.add_representer(LocatedDict, FlowDumper.represent_dict)
FlowDumper.add_representer(LocatedList, FlowDumper.represent_list)


def dump_yaml(flow: dict[str, Any]) -> str:
    return yaml.dump(flow, Dumper=FlowDumper, sort_keys=False, allow_unicode=True, width=120)
