"""The flows an app can run: YAML files in the flows directory, parsed and validated once per file version."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from shared.engine.errors import FlowError
from shared.engine.model import Flow
from shared.engine.parser import parse_flow_file
from shared.engine.validator import validate_flow


class FlowNotFound(LookupError):
    pass


PROMPT_FLOW_MARKERS = ("flow.dag.yaml", "flow.dag.yml")


def in_prompt_flow_folder(path: Path, root: Path) -> bool:
    """True for a file inside a prompt flow folder (one holding flow.dag.yaml) under `root`: such a folder is the
    original of an imported flow (`tenantflow import promptflow`), not a Tenantflow flow."""
    for folder in path.parents:
        if any((folder / marker).is_file() for marker in PROMPT_FLOW_MARKERS):
            return True
        if folder == root:
            break
    return False


def flow_files(paths: list[Path]) -> list[Path]:
    """Expands directories into their *.yaml / *.yml files (sorted), leaving out prompt flow folders."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()
                                and not in_prompt_flow_folder(p, path)))
        else:
            found.append(path)
    return found


class FlowCatalog:
    def __init__(self, flows_dir: Path, static_connections: Collection[str]) -> None:
        self.flows_dir = flows_dir
        self.static_connections = set(static_connections)
        self.cache: dict[Path, tuple[float, Flow]] = {}
        self.index: dict[str, Path] | None = None

    def load(self, path: Path) -> Flow:
        """Parses and validates one file (cached by modification time). Raises FlowError."""
        try:
            mtime = path.stat().st_mtime
        except OSError:
            raise FlowNotFound(f"flow file not found: {path}") from None
        cached = self.cache.get(path)
        if cached and cached[0] == mtime:
            return cached[1]
        flow = validate_flow(parse_flow_file(path), self.static_connections)
        self.cache[path] = (mtime, flow)
        return flow

    def get(self, reference: str) -> Flow:
        """A flow by id (from the flows directory) or by a .yaml path. Raises FlowNotFound or FlowError."""
        if reference.endswith((".yaml", ".yml")) or "/" in reference:
            return self.load(Path(reference))
        path = self.ids().get(reference)
        if path is None:
            self.index = None  # a file may have been added since
            path = self.ids().get(reference)
        if path is None:
            for suffix in (".yaml", ".yml"):  # an invalid file is named by its file name: show why it is invalid
                candidate = self.flows_dir / f"{reference}{suffix}"
                if candidate.is_file():
                    return self.load(candidate)
            raise FlowNotFound(f"unknown flow {reference!r}")
        return self.load(path)

    def ids(self) -> dict[str, Path]:
        if self.index is None:
            index: dict[str, Path] = {}
            for path in flow_files([self.flows_dir]) if self.flows_dir.is_dir() else []:
                try:
                    index.setdefault(self.load(path).id, path)
                except FlowError:
                    continue  # an invalid file is reported by `tenantflow validate`, never run
            self.index = index
        return self.index
