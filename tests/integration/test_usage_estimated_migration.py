"""The `estimated` column of usage records reaches databases that already hold a ledger: PostgreSQL migration 0009
and SQLite migration 0006 apply over existing rows (which read back as not estimated), on PostgreSQL a row written
by an app that predates the column (no `estimated` key) is still stored, and on Table storage an entity written
before the property existed reads back as not estimated."""

from __future__ import annotations

import dataclasses
import sqlite3
from datetime import UTC, datetime
from decimal import Decimal

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from shared.secret import Secret
from shared.settings import Settings
from shared.storage.factory import open_stores
from shared.storage.models import UsageRecord
from shared.storage.postgres.database import migrate, migrations
from shared.storage.postgres.stores import usage_row
from shared.storage.sqlite import database as sqlite_database
from shared.storage.table.stores import usage_entity
from tests.backends import postgres_backend, sqlite_backend, table_backend

NOW = datetime(2026, 11, 3, 12, tzinfo=UTC)


def old_record(tenant: str, run_id: str) -> UsageRecord:
    return UsageRecord(tenant, run_id, "f", "s", 0, 1, "gpt-4o-mini", "x.openai.azure.com", 10, 5, 15, 0, 0,
                       Decimal("0.1"), NOW)


def row_before_0009(record: UsageRecord) -> dict:
    """The JSON row an app of migration 0008's time sends to tf_book: no `estimated` key."""
    row = usage_row(record)
    del row["estimated"]
    return row


async def test_postgres_0009_applies_over_an_existing_ledger_and_accepts_rows_without_the_key():
    async with postgres_backend.bare_database("tf_pg_upgrade") as (admin, name):
        owner = postgres_backend.dsn(admin, postgres_backend.OWNER, name)
        app = postgres_backend.dsn(admin, postgres_backend.APP, name)
        async with await AsyncConnection.connect(owner, autocommit=True) as connection:  # a database at 0008
            await connection.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT "
                                     "NULL, applied_at timestamptz NOT NULL DEFAULT now())")
            for version, migration, text in migrations():
                if version <= 8:
                    await connection.execute(text)  # type: ignore[arg-type]
                    await connection.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                                             (version, migration))
            await connection.execute("SELECT tf_book('acme', %s)",
                                     (Jsonb({"records": [row_before_0009(old_record("acme", "before"))]}),))
        applied = await migrate(owner, app)
        assert "0009_usage_estimated.sql" in applied
        async with await AsyncConnection.connect(owner, autocommit=True) as connection:  # an app not yet updated
            await connection.execute("SELECT tf_book('acme', %s)",
                                     (Jsonb({"records": [row_before_0009(old_record("acme", "during"))]}),))
        settings = dataclasses.replace(Settings.from_env({}), store="postgres", postgres_dsn=Secret(app),
                                       postgres_migration_dsn=Secret(owner))
        stores = await open_stores(settings)
        try:
            assert [r.estimated for r in await stores.usage.list_for_run("acme", "before")] == [False]
            assert [r.estimated for r in await stores.usage.list_for_run("acme", "during")] == [False]
            new = dataclasses.replace(old_record("acme", "after"), estimated=True)
            assert await stores.usage.record([new]) == 1
            assert [r.estimated for r in await stores.usage.list_for_run("acme", "after")] == [True]
            assert (await stores.budgets.counters("acme", "2026-11")).used_tokens == 45
        finally:
            await stores.close()


async def test_sqlite_0006_applies_over_an_existing_ledger(tmp_path):
    settings = await sqlite_backend.provision(tmp_path)
    assert settings.sqlite_path is not None
    with sqlite3.connect(settings.sqlite_path) as connection:  # a database at 0005, with a record
        connection.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY)")
        for version, text in sqlite_database.migrations():
            if version <= 5:
                for statement in sqlite_database.split_statements(text):
                    connection.execute(statement)
                connection.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
        connection.execute("INSERT INTO usage_records VALUES ('acme', 'before', 's', 0, 1, 'f', 'gpt-4o-mini', "
                           "'x.openai.azure.com', 10, 5, 15, 0, 0, '0.1', ?, '2026-11-03', NULL)", (NOW.isoformat(),))
    connection.close()
    stores = await open_stores(settings)
    try:
        assert [r.estimated for r in await stores.usage.list_for_run("acme", "before")] == [False]
        new = dataclasses.replace(old_record("acme", "after"), estimated=True)
        assert await stores.usage.record([new]) == 1
        assert [r.estimated for r in await stores.usage.list_for_run("acme", "after")] == [True]
    finally:
        await stores.close()


async def test_table_entities_written_before_the_property_read_as_not_estimated(tmp_path):
    settings = await table_backend.provision(tmp_path)
    stores = await open_stores(settings)
    try:
        entity = usage_entity(old_record("acme", "before"))
        del entity["estimated"]
        await stores.usage.tables["usage"].create_entity(entity)  # type: ignore[attr-defined]
        assert await stores.usage.record([dataclasses.replace(old_record("acme", "after"), estimated=True)]) == 1
        assert [r.estimated for r in await stores.usage.list_for_run("acme", "before")] == [False]
        assert [r.estimated for r in await stores.usage.list_for_run("acme", "after")] == [True]
    finally:
        await stores.close()
        await table_backend.dispose(settings)
