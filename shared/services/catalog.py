"""The flows an app can run: YAML files in the flows directory, parsed and validated once per file version.

HTTP, queue and timer find a flow by id only, among the flows directory's flows (`get`): an id is never a path, and
"no such flow" is the same answer whatever exists elsewhere on disk. Paths are for the CLI (`load_reference`)."""

from __future__ import annotations

import time
from collections.abc import Collection
from pathlib import Path

from shared.engine.errors import FlowError
from shared.engine.model import Flow
from shared.engine.parser import parse_flow_file
from shared.engine.validator import validate_flow
from shared.identifiers import FLOW_ID


class FlowNotFound(LookupError):
    pass


def is_flow_id(value: object) -> bool:
    """1-128 letters, digits and . _ - starting with a letter or digit: no path separator, no NUL, no `..`."""
    return isinstance(value, str) and FLOW_ID.fullmatch(value) is not None


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


RECHECK_SECONDS = 2.0  # a cached flow file is looked at again (one stat) at most this often


class FlowCatalog:
    def __init__(self, flows_dir: Path, static_connections: Collection[str],
                 recheck_seconds: float = RECHECK_SECONDS) -> None:
        self.flows_dir = flows_dir
        self.static_connections = set(static_connections)
        self.recheck_seconds = recheck_seconds
        self.cache: dict[Path, tuple[float, float, Flow]] = {}  # path → (mtime, monotonic time checked, flow)
        self.index: dict[str, Path] | None = None

    def load(self, path: Path) -> Flow:
        """Parses and validates one file, cached by modification time; a cached file is checked for changes at
        most every `recheck_seconds`, so a run costs no file-system call. Raises FlowError."""
        cached = self.cache.get(path)
        now = time.monotonic()
        if cached and now - cached[1] < self.recheck_seconds:
            return cached[2]
        try:
            mtime = path.stat().st_mtime
        except OSError:
            raise FlowNotFound(f"flow file not found: {path}") from None
        if cached and cached[0] == mtime:
            self.cache[path] = (mtime, now, cached[2])
            return cached[2]
        flow = validate_flow(parse_flow_file(path), self.static_connections)
        self.cache[path] = (mtime, now, flow)
        return flow

    def get(self, flow_id: str) -> Flow:
        """A flow of the flows directory by its id (what HTTP, queue and timer use). Raises FlowNotFound — one
        message for every unknown id, whatever its text — or FlowError for an invalid file of the flows directory
        named `<id>.yaml` (so its author sees why)."""
        if not is_flow_id(flow_id):
            raise FlowNotFound("unknown flow: a flow id is 1-128 letters, digits and . _ -")
        path = self.ids().get(flow_id)
        if path is None:
            self.index = None  # a file may have been added since
            path = self.ids().get(flow_id)
        if path is None:
            for suffix in (".yaml", ".yml"):
                candidate = self.flows_dir / f"{flow_id}{suffix}"
                if candidate.is_file() and self.inside(candidate):
                    return self.load(candidate)
            raise FlowNotFound(f"unknown flow {flow_id!r}")
        return self.load(path)

    def load_reference(self, reference: str) -> Flow:
        """For the CLI only: a flow id, or a path to a .yaml file anywhere (the operator's own files)."""
        if reference.endswith((".yaml", ".yml")) or "/" in reference or "\\" in reference:
            return self.load(Path(reference))
        return self.get(reference)

    def inside(self, path: Path) -> bool:
        try:
            return path.resolve().is_relative_to(self.flows_dir.resolve())
        except OSError:
            return False

    def ids(self) -> dict[str, Path]:
        if self.index is None:
            index: dict[str, Path] = {}
            for path in flow_files([self.flows_dir]) if self.flows_dir.is_dir() else []:
                if not self.inside(path):  # a symlink out of the flows directory
                    continue
                try:
                    index.setdefault(self.load(path).id, path)
                except FlowError:
                    continue  # an invalid file is reported by `tenantflow validate`, never run
            self.index = index
        return self.index
