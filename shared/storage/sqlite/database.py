"""One SQLite database file: statements on the event loop's thread, long reads in a worker thread."""

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
    if "readonly" in text or "read-only" in text or "attempt to write" in text or not writable(path):
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


def writable(path: Path) -> bool:
    """False when the file (or, before it exists, its folder) cannot be written: a read-only file system (where
    SQLite says only "unable to open") or permissions. A folder still to be created counts as writable."""
    import os

    target = path if path.exists() else path.parent
    return not target.exists() or os.access(target, os.W_OK)


CHECKPOINT_EVERY = 200  # statements on the loop's connection between two background WAL checkpoints


class SqliteDatabase:
    """Statements run on the event loop's thread: each is a fraction of a millisecond (WAL, synchronous=NORMAL),
    less than handing it to a thread and back. Only long reads (usage summaries over a whole ledger) go to a
    worker thread, on a connection of their own; WAL lets them read while the loop writes.

    The WAL is checkpointed in that worker thread too (PASSIVE: it never waits for the loop's writes), every
    CHECKPOINT_EVERY statements. SQLite's own auto-checkpoint would run in the committing statement, on the loop's
    thread: copying the WAL into the database file and syncing it stalled a request about every 100 runs by
    ~13 ms."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.executor: ThreadPoolExecutor | None = None
        self.connection: sqlite3.Connection | None = None
        self.reader: sqlite3.Connection | None = None
        self.statements = 0  # on the loop's connection since the last checkpoint was scheduled
        self.checkpoint: asyncio.Future[Any] | None = None

    def open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA busy_timeout=30000")
        connection.execute("PRAGMA foreign_keys=ON")
        connection.execute("PRAGMA synchronous=NORMAL")
        return connection

    def connect(self) -> sqlite3.Connection:
        if self.connection is None:
            self.connection = self.open()
            self.connection.execute("PRAGMA wal_autocheckpoint=0")  # checkpointed in the worker thread instead
        return self.connection

    def connect_reader(self) -> sqlite3.Connection:
        if self.reader is None:
            self.reader = self.open()
        return self.reader

    async def run(self, work: Callable[[sqlite3.Connection], T], long_read: bool = False) -> T:
        """Runs `work` on the loop's connection, or (`long_read`) in the worker thread on the reader's."""
        try:
            if not long_read:
                result = work(self.connect())
                self.statements += 1
                if self.statements >= CHECKPOINT_EVERY and (self.checkpoint is None or self.checkpoint.done()):
                    self.statements = 0
                    self.checkpoint = asyncio.get_running_loop().run_in_executor(self.worker(), self.checkpoint_wal)
                return result
            return await asyncio.get_running_loop().run_in_executor(self.worker(),
                                                                    lambda: work(self.connect_reader()))
        except (sqlite3.OperationalError, sqlite3.DatabaseError) as exc:
            if isinstance(exc, sqlite3.IntegrityError):
                raise
            raise unavailable(self.path, exc) from None
        except OSError as exc:  # the folder cannot be created
            raise StoreUnavailable(f"SQLite database {self.path}: {exc.strerror or type(exc).__name__}") from None

    def worker(self) -> ThreadPoolExecutor:
        if self.executor is None:
            self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        return self.executor

    def checkpoint_wal(self) -> None:
        """In the worker thread. A checkpoint that fails (the disk is full, say) is retried by the next one; the
        statements that need the disk report it themselves."""
        try:
            self.connect_reader().execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:
            pass

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
        if self.executor is not None:
            self.executor.shutdown(wait=True)
            self.executor = None
        for connection in (self.connection, self.reader):
            if connection is not None:
                connection.close()
        self.connection = self.reader = None


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
