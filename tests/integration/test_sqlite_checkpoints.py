"""SQLite's WAL is copied into the database file by the worker thread, every CHECKPOINT_EVERY statements, and
never by a statement on the event loop's thread (SQLite's own auto-checkpoint stalled a request about every 100
runs)."""

from __future__ import annotations

from shared.storage.sqlite.database import CHECKPOINT_EVERY, SqliteDatabase

ROW = "x" * 100_000


async def test_the_wal_reaches_the_database_file_through_the_worker_thread_only(tmp_path):
    path = tmp_path / "wal.db"
    db = SqliteDatabase(path)
    try:
        await db.run(lambda c: c.execute("CREATE TABLE t (v TEXT)"))
        assert await db.run(lambda c: c.execute("PRAGMA wal_autocheckpoint").fetchone()[0]) == 0
        before, rows = path.stat().st_size, CHECKPOINT_EVERY - db.statements  # the statement that makes it due
        for _ in range(rows - 1):  # ~20 MB of WAL: SQLite alone would have checkpointed at ~4 MB
            await db.run(lambda c: c.execute("INSERT INTO t VALUES (?)", (ROW,)))
        assert db.checkpoint is None and path.stat().st_size == before
        assert (tmp_path / "wal.db-wal").stat().st_size > (rows - 1) * len(ROW)

        await db.run(lambda c: c.execute("INSERT INTO t VALUES (?)", (ROW,)))
        assert db.checkpoint is not None
        await db.checkpoint
        assert path.stat().st_size > rows * len(ROW)  # every row is in the database file now
        assert await db.run(lambda c: c.execute("SELECT count(*) FROM t").fetchone()[0]) == rows
    finally:
        await db.close()
