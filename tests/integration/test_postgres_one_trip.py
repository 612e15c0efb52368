"""The run path's statements go to PostgreSQL through libpq directly (PostgresDatabase.call / one_trip), not a
cursor: on the real server, its answers, its errors and a call cancelled mid-statement must leave the pool and the
books as a cursor would."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from psycopg import errors

from shared.storage.factory import open_stores
from shared.storage.models import BookBatch, RunRecord
from shared.storage.ports import NotFound
from tests.backends import postgres_backend


@pytest.fixture
async def database(tmp_path):
    settings = await postgres_backend.provision(tmp_path)
    stores = await open_stores(settings)
    try:
        yield stores, stores.bookkeeping.db
    finally:
        await stores.close()
        await postgres_backend.dispose(settings)


async def test_values_nulls_and_server_errors_come_back_as_with_a_cursor(database):
    _, db = database
    assert await db.call("SELECT $1::text || ' ' || $2::text", ("héllo", "wörld")) == "héllo wörld"
    assert await db.call("SELECT $1::text", (None,)) is None
    assert await db.call("SELECT x FROM generate_series(1, 0) x", ()) is None  # no row
    with pytest.raises(errors.DivisionByZero):
        await db.call("SELECT 1 / $1::integer", ("0",))
    with pytest.raises(errors.UndefinedFunction):
        await db.call("SELECT no_such_function()", ())
    with pytest.raises(NotFound, match="NUL"):
        await db.call("SELECT $1::text", ("a\x00b",))
    assert await db.call("SELECT 40 + $1::integer", ("2",)) == "42"  # the connection is fine after errors


async def test_finishing_an_unknown_run_is_not_found(database):
    stores, _ = database
    ghost = RunRecord(uuid.uuid4().hex, "acme", "f", "h", "http", "succeeded")
    with pytest.raises(NotFound, match=ghost.run_id):
        await stores.bookkeeping.commit(BookBatch("acme", finish_run=ghost))


async def test_a_call_cancelled_mid_statement_gives_its_connection_up(database):
    stores, db = database
    call = asyncio.create_task(db.call("SELECT pg_sleep(5)::text", ()))
    await asyncio.sleep(0.3)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    # the pool did not get it back mid-statement: every later call works, and none waits behind the sleep
    answers = await asyncio.wait_for(asyncio.gather(*[db.call("SELECT $1::text", (str(i),)) for i in range(20)]), 3)
    assert answers == [str(i) for i in range(20)]
    run = RunRecord(uuid.uuid4().hex, "acme", "f", "h", "http", "running")
    assert (await stores.bookkeeping.commit(BookBatch("acme", create_run=run))).created is True
