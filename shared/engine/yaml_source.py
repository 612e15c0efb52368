"""YAML → plain Python values that remember their source lines.

`LocatedDict` and `LocatedList` are a dict and a list with `.line` (where they start) and per key / per item
lines, so that validation can point at `file:line`. Duplicate keys are an error (plain PyYAML keeps the last).
"""

from __future__ import annotations

from typing import Any

import yaml


class YamlSourceError(Exception):
    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


class LocatedDict(dict[str, Any]):
    line: int = 0
    key_lines: dict[str, int]

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class LocatedList(list[Any]):
    line: int = 0
    item_lines: list[int]

    def line_of(self, index: int) -> int:
        return self.item_lines[index] if 0 <= index < len(self.item_lines) else self.line


class LineLoader(yaml.SafeLoader):
    """SafeLoader whose nodes become LocatedDict / LocatedList."""


def construct_mapping(loader: LineLoader, node: yaml.MappingNode) -> LocatedDict:
    result = LocatedDict()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, str):
            key = str(key)
        if key in result:
            raise YamlSourceError(line, f"duplicate key {key!r}")
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = line
    return result


def construct_sequence(loader: LineLoader, node: yaml.SequenceNode) -> LocatedList:
    result = LocatedList(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
    return result


LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, construct_sequence)


def load_located(text: str) -> Any:
    """Parses one YAML document; raises YamlSourceError with the line of a syntax error."""
    try:
        return yaml.load(text, Loader=LineLoader)  # noqa: S506 - SafeLoader subclass
    except YamlSourceError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or "invalid YAML"
        context = f" ({exc.context}" if exc.context else ""
        if exc.context and exc.context_mark is not None and exc.context_mark.line + 1 != line:
            context += f" started on line {exc.context_mark.line + 1}"
        context += ")" if exc.context else ""
        raise YamlSourceError(line, f"YAML syntax error: {problem}{context}") from None
    except yaml.YAMLError as exc:
        raise YamlSourceError(None, f"YAML syntax error: {exc}") from None
    except RecursionError:
        raise YamlSourceError(None, "YAML nested too deeply to read") from None
