"""One SQLite database file, used from a single worker thread so the event loop never blocks on it."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from shared.storage.ports import StoreUnavailable

T = TypeVar("T")


def unavailable(path: Path, exc: sqlite3.Error) -> StoreUnavailable:
    """One line naming the cause: read-only database, disk full, corrupt file, locked, or cannot be opened."""
    text = str(exc).lower()
    if "readonly" in text or "read-only" in text or "attempt to write" in text:
        cause = "the database is read-only (check the file's and its folder's permissions)"
    elif "disk is full" in text or "database or disk is full" in text or "disk i/o" in text:
        cause = "the disk is full (or the database reached its size limit)"
    elif "malformed" in text or "not a database" in text or "corrupt" in text:
        cause = "the file is corrupt or not a SQLite database"
    elif "locked" in text or "busy" in text:
        cause = "the database is locked by another process"
    elif "unable to open" in text:
        cause = "the file cannot be opened (missing folder or permissions)"
    else:
        cause = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return StoreUnavailable(f"SQLite database {path}: {cause}")


class SqliteDatabase:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self.connection: sqlite3.Connection | None = None

    def connect(self) -> sqlite3.Connection:
        if self.connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
            connection.row_factory = sqlite3.Row
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA busy_timeout=30000")
            connection.execute("PRAGMA foreign_keys=ON")
            connection.execute("PRAGMA synchronous=NORMAL")
            self.connection = connection
        return self.connection

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.executor, lambda: work(self.connect()))
        except (sqlite3.OperationalError, sqlite3.DatabaseError) as exc:
            if isinstance(exc, sqlite3.IntegrityError):
                raise
            raise unavailable(self.path, exc) from None
        except OSError as exc:  # the folder cannot be created
            raise StoreUnavailable(f"SQLite database {self.path}: {exc.strerror or type(exc).__name__}") from None

    async def transaction(self, work: Callable[[sqlite3.Connection], T], immediate: bool = False) -> T:
        """Runs `work` in one transaction; BEGIN IMMEDIATE takes the write lock up front (atomic across
        processes)."""

        def wrapped(connection: sqlite3.Connection) -> T:
            connection.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            try:
                result = work(connection)
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
            return result

        return await self.run(wrapped)

    async def migrate(self) -> None:
        def apply(connection: sqlite3.Connection) -> None:
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY)")
                done = {row[0] for row in connection.execute("SELECT version FROM schema_version")}
                for version, sql in migrations():
                    if version in done:
                        continue
                    for statement in split_statements(sql):
                        connection.execute(statement)
                    connection.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

        await self.run(apply)

    async def close(self) -> None:
        def close_connection(connection: sqlite3.Connection) -> None:
            connection.close()
            self.connection = None

        if self.connection is not None:
            await self.run(close_connection)
        self.executor.shutdown(wait=True)


def migrations() -> list[tuple[int, str]]:
    folder = resources.files("shared.storage.sqlite") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text(encoding="utf-8")))
    return sorted(found)


def split_statements(sql: str) -> list[str]:
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def rows(connection: sqlite3.Connection, sql: str, params: Any = ()) -> list[sqlite3.Row]:
    return connection.execute(sql, params).fetchall()
