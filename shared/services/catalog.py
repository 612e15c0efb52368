"""The flows an app can run: YAML files in the flows directory, parsed and validated once per file version."""

from __future__ import annotations

import time
from collections.abc import Collection
from pathlib import Path

from shared.engine.errors import FlowError
from shared.engine.model import Flow
from shared.engine.parser import parse_flow_file
from shared.engine.validator import validate_flow


class FlowNotFound(LookupError):
    pass


def flow_files(paths: list[Path]) -> list[Path]:
    """Expands directories into their *.yaml / *.yml files (sorted)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()))
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
