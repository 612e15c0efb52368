"""PostgreSQL isolation below the application: row-level security on every tenant table, no self-granted operator
scope, cross-tenant reads only through the tenantflow_* functions, and an app that never migrates."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from psycopg import AsyncConnection, errors, sql

from shared.storage.factory import open_stores
from shared.storage.models import (
    ApiKey,
    BookBatch,
    Budget,
    Lease,
    ModelAlias,
    RunRecord,
    Schedule,
    StoredCredential,
    Tenant,
    UsageRecord,
)
from shared.storage.ports import NotFound
from shared.storage.postgres.database import PostgresDatabase, SchemaNotReady, migrate
from tests.backends import postgres_backend
from tests.backends.fixtures import require_service

TENANTS = ("tenant-a", "tenant-b")
NOW = datetime(2026, 11, 3, 12, tzinfo=UTC)


@pytest.fixture
async def pg(tmp_path):
    settings = await postgres_backend.provision(tmp_path)
    stores = await open_stores(settings)
    for tenant in TENANTS:
        await stores.tenants.add(Tenant(tenant, tenant.upper(), created_at=NOW))
        await stores.tenants.add_api_key(ApiKey(f"key{tenant[-1]}" * 3, tenant, "hash-" + tenant, NOW))
        await stores.credentials.put(StoredCredential(tenant, "foundry", "azure_openai", "https://x.openai.azure.com",
                                                      secret_blob=f"v1.k.{tenant}", key_id="k"))
        await stores.runs.create(RunRecord(f"run-{tenant}", tenant, "f", "h", "http", "running", created_at=NOW,
                                           started_at=NOW - timedelta(hours=2)))
        await stores.usage.record([UsageRecord(tenant, f"run-{tenant}", "f", "s", 0, 1, "gpt-4o", "x.openai.azure.com",
                                               10, 5, 15, 0, 0, Decimal("0.1"), NOW)])
        await stores.budgets.set_budget(Budget(tenant, 1000, Decimal("5")))
        await stores.bookkeeping.commit(BookBatch(tenant, reserve=Lease(
            tenant, "lease-" + tenant, f"run-{tenant}", "2026-11", 10, Decimal("0.01"), NOW + timedelta(days=3650)),
            limits=Budget(tenant, 1000, Decimal("5"))))
        await stores.schedules.add(Schedule(f"sched-{tenant}", tenant, "f", "* * * * *", {"x": 1}, created_at=NOW))
        await stores.replay.first_use(tenant, "nonce-" + tenant, NOW + timedelta(days=3650))
        await stores.members.add(tenant, f"ann@{tenant}.example")
        await stores.aliases.put(ModelAlias(tenant, "chat", "foundry", "gpt-4o-mini", updated_at=NOW))
    yield settings, stores
    await stores.close()
    await postgres_backend.dispose(settings)


# every table that holds tenant data, with its tenant column and an INSERT of a row for tenant-b
TENANT_TABLES = {
    "tenants": ("id", "INSERT INTO tenants VALUES ('tenant-b', 'B2', 'active', NULL, now())"),
    "api_keys": ("tenant_id", "INSERT INTO api_keys VALUES ('bbbbbbbbbbbb', 'tenant-b', 'h', now(), NULL)"),
    "credentials": ("tenant_id", "INSERT INTO credentials VALUES ('tenant-b', 'other', 'openai', NULL, NULL, 'key', "
                                 "'{}', 'blob', 'k', 1, now())"),
    "runs": ("tenant_id", "INSERT INTO runs VALUES ('run-x', 'tenant-b', 'f', 'queued', NULL, now(), '{}')"),
    "usage_records": ("tenant_id", "INSERT INTO usage_records VALUES ('tenant-b', 'r', 's', 0, 9, 'f', 'm', 'h', 1, 1, "
                                   "2, 0, 0, 1, now(), current_date)"),
    "usage_daily": ("tenant_id", "INSERT INTO usage_daily VALUES ('tenant-b', current_date, 'm2', 'f', 1, 1, 2, 1, "
                                 "1, 1)"),
    "usage_run_days": ("tenant_id", "INSERT INTO usage_run_days VALUES ('tenant-b', current_date, 'm2', 'f', 'r')"),
    "budgets": ("tenant_id", "INSERT INTO budgets VALUES ('tenant-b', 1, 1) ON CONFLICT DO NOTHING"),
    "budget_counters": ("tenant_id", "INSERT INTO budget_counters (tenant_id, period) VALUES ('tenant-b', '2027-01')"),
    "schedules": ("tenant_id", "INSERT INTO schedules VALUES ('s2', 'tenant-b', 'f', '* * * * *', '{}', true, now())"),
    "replay_guard": ("tenant_id", "INSERT INTO replay_guard VALUES ('tenant-b', 'n2', now())"),
    "budget_leases": ("tenant_id", "INSERT INTO budget_leases VALUES ('tenant-b', 'l2', 'r', '2027-01', 1, 1, now())"),
    "tenant_members": ("tenant_id", "INSERT INTO tenant_members VALUES ('tenant-b', 'bob@b.example', now())"),
    "model_aliases": ("tenant_id", "INSERT INTO model_aliases VALUES ('tenant-b', 'm2', 'foundry', 'd', NULL, now())"),
}


async def scoped(dsn: str, tenant: str | None, statement: str, *, scope: str | None = None) -> tuple[int, list]:
    """Runs one statement as the role of `dsn` in a transaction scoped to `tenant`; (rowcount, rows)."""
    async with await AsyncConnection.connect(dsn) as connection:
        async with connection.transaction():
            if tenant is not None:
                await connection.execute("SELECT set_config('tenantflow.tenant_id', %s, true)", (tenant,))
            if scope is not None:
                await connection.execute("SELECT set_config('tenantflow.scope', %s, true)", (scope,))
            cursor = await connection.execute(statement)  # type: ignore[arg-type]
            rows = await cursor.fetchall() if cursor.description else []
            return cursor.rowcount, rows


def test_every_table_of_the_schema_that_holds_tenant_data_is_listed():
    """A new tenant table must be added here (and get a policy), or this fails."""
    import re

    from shared.storage.postgres.database import migrations

    created = {m for _, _, text in migrations() for m in re.findall(r"CREATE TABLE (\w+)", text)}
    assert created - set(TENANT_TABLES) == set(), "tables without a row-level security test"


@pytest.mark.parametrize("table", sorted(TENANT_TABLES))
async def test_scoped_to_a_the_app_role_sees_and_changes_nothing_of_b(pg, table):
    settings, _ = pg
    app = settings.postgres_dsn.reveal()
    column, insert = TENANT_TABLES[table]
    b_rows = f"SELECT {column} FROM {table} WHERE {column} = 'tenant-b'"
    assert (await scoped(app, "tenant-b", b_rows))[1] != []  # B's rows exist…
    assert await scoped(app, "tenant-a", b_rows) == (0, [])  # …and A cannot see them
    assert {r[0] for r in (await scoped(app, "tenant-a", f"SELECT {column} FROM {table}"))[1]} == {"tenant-a"}
    touch_b = f"UPDATE {table} SET {column} = {column} WHERE {column} = 'tenant-b'"
    assert (await scoped(app, "tenant-a", touch_b))[0] == 0
    assert (await scoped(app, "tenant-a", f"DELETE FROM {table} WHERE {column} = 'tenant-b'"))[0] == 0
    with pytest.raises(errors.InsufficientPrivilege, match="row-level security"):
        await scoped(app, "tenant-a", insert)
    with pytest.raises(errors.InsufficientPrivilege, match="row-level security"):  # moving A's row to B
        await scoped(app, "tenant-a", f"UPDATE {table} SET {column} = 'tenant-b' WHERE {column} = 'tenant-a'")
    assert (await scoped(app, None, f"SELECT {column} FROM {table}"))[1] == []  # no scope: nothing
    assert (await scoped(app, "tenant-b", b_rows))[1] != []  # B's rows are untouched


@pytest.mark.parametrize("table", sorted(TENANT_TABLES))
async def test_the_app_role_cannot_give_itself_operator_scope(pg, table):
    settings, _ = pg
    column, _ = TENANT_TABLES[table]
    for tenant in (None, "tenant-a"):
        _, rows = await scoped(settings.postgres_dsn.reveal(), tenant, f"SELECT {column} FROM {table}",
                               scope="operator")
        assert {r[0] for r in rows} <= {tenant}


async def test_the_app_role_cannot_lift_row_level_security(pg):
    settings, _ = pg
    app = settings.postgres_dsn.reveal()
    for statement in ("ALTER TABLE credentials DISABLE ROW LEVEL SECURITY",
                      "DROP POLICY credentials_tenant ON credentials", "SET ROLE tenantflow_owner",
                      "SET row_security = off; SELECT * FROM credentials",
                      "CREATE FUNCTION tenantflow_all() RETURNS SETOF credentials LANGUAGE sql SECURITY DEFINER "
                      "AS 'SELECT * FROM credentials'"):
        with pytest.raises((errors.InsufficientPrivilege, errors.InvalidParameterValue)):
            await scoped(app, "tenant-a", statement)
    async with await AsyncConnection.connect(app) as connection:
        role = await (await connection.execute(
            "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")).fetchone()
        not_owner = await (await connection.execute(
            "SELECT bool_and(tableowner <> current_user) FROM pg_tables WHERE schemaname = 'public'")).fetchone()
        forced = await (await connection.execute(
            "SELECT bool_and(relrowsecurity AND relforcerowsecurity) FROM pg_class WHERE relname = ANY(%s)",
            (list(TENANT_TABLES),))).fetchone()
    assert role == (False, False) and not_owner == (True,) and forced == (True,)


async def test_cross_tenant_functions_return_fixed_narrow_answers(pg):
    settings, stores = pg
    app = settings.postgres_dsn.reveal()
    assert (await scoped(app, None, "SELECT * FROM tenantflow_stale_runs(now()::text, 10)"))[1] == [
        ("tenant-a", "run-tenant-a"), ("tenant-b", "run-tenant-b")]  # ids only: no inputs or outputs
    assert sorted((await scoped(app, None, "SELECT * FROM tenantflow_credentials_not_under_key('k2', 10)"))[1]) == [
        ("tenant-a", "foundry"), ("tenant-b", "foundry")]  # names only: no blobs
    assert len((await scoped(app, None, "SELECT * FROM tenantflow_api_key('keyakeyakeya')"))[1]) == 1
    assert (await scoped(app, None, "SELECT * FROM tenantflow_api_key('%')"))[1] == []  # no pattern matching
    # the adapters use them for what spans tenants, and read each row in its own tenant's scope
    assert [r.run_id for r in await stores.runs.list_stale_running(datetime.now(UTC))] == ["run-tenant-a",
                                                                                          "run-tenant-b"]
    assert {s.tenant_id for s in await stores.schedules.list()} == set(TENANTS)
    assert (await stores.tenants.get_api_key("keybkeybkeyb")).tenant_id == "tenant-b"
    assert await stores.schedules.remove("sched-tenant-b") and await stores.schedules.get("sched-tenant-b") is None
    assert {r.group for r in await stores.usage_queries.summarize(None, None, None, "tenant")} == set(TENANTS)
    assert [r.group for r in await stores.usage_queries.summarize("tenant-a", None, None, "tenant")] == ["tenant-a"]
    # the lease sweep walks every tenant through tenantflow_tenants() and releases expired leases in scope
    assert await stores.bookkeeping.release_expired(NOW + timedelta(days=3651)) == 2
    assert await stores.bookkeeping.leases("tenant-a") == [] and await stores.bookkeeping.leases("tenant-b") == []


async def test_the_owner_reads_all_but_writes_only_in_scope(pg):
    settings, _ = pg
    owner = settings.postgres_migration_dsn.reveal()
    assert len((await scoped(owner, None, "SELECT * FROM credentials"))[1]) == 2
    assert (await scoped(owner, "tenant-a", "UPDATE credentials SET kind = 'x' WHERE tenant_id = 'tenant-b'"))[0] == 0


async def test_nul_in_an_id_is_the_ports_not_found_not_a_driver_error(pg):
    _, stores = pg
    with pytest.raises(NotFound):
        await stores.runs.get("tenant-a\x00", "run-tenant-a")
    with pytest.raises(NotFound):
        await stores.runs.get("tenant-a", "run\x00")
    with pytest.raises(NotFound):
        await stores.tenants.get_api_key("key\x00")


async def test_pooled_connection_carries_no_tenant_setting(pg):
    _, stores = pg
    db = stores.credentials.db
    await stores.credentials.get("tenant-a", "foundry")
    async with db.pool.connection() as connection:
        value = await (await connection.execute("SELECT current_setting('tenantflow.tenant_id', true)")).fetchone()
        await connection.rollback()
    assert value["current_setting"] in (None, "")
    assert (await stores.credentials.get("tenant-a", "foundry")).tenant_id == "tenant-a"


async def test_migrations_are_idempotent_and_safe_to_run_concurrently(pg):
    settings, _ = pg
    owner, app = settings.postgres_migration_dsn.reveal(), settings.postgres_dsn.reveal()
    results = await asyncio.gather(*[migrate(owner, app) for _ in range(4)])
    assert results == [[], [], [], []]


async def test_an_app_whose_schema_is_behind_stops_with_the_command_to_run():
    async with postgres_backend.bare_database("tf_pg_bare") as (admin, name):
        db = PostgresDatabase(postgres_backend.dsn(admin, postgres_backend.APP, name))
        with pytest.raises(SchemaNotReady) as caught:
            await db.open()
        message = str(caught.value)
        assert "\n" not in message and "migration 0001_initial.sql and" in message
        assert "run `tenantflow db migrate` (with TENANTFLOW_POSTGRES_MIGRATION_DSN set)" in message


def cli(*args: str, env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TENANTFLOW_ENCRYPTION_KEY": base64.b64encode(os.urandom(32)).decode(), **env_extra}
    result = subprocess.run([sys.executable, "-m", "shared.cli", *args], env=env, capture_output=True, text=True,
                            timeout=60)
    assert "Traceback" not in result.stderr, result.stderr
    return result


async def test_db_migrate_command_migrates_once_then_the_app_starts():
    admin = require_service("TENANTFLOW_TEST_POSTGRES_ADMIN_DSN")
    await postgres_backend.ensure_template(admin)
    name = f"tf_pg_cli_{uuid.uuid4().hex[:8]}"
    await postgres_backend.admin_execute(admin, sql.SQL("CREATE DATABASE {} OWNER {}").format(
        sql.Identifier(name), sql.Identifier(postgres_backend.OWNER)))
    env = {"TENANTFLOW_STORE": "postgres",
           "TENANTFLOW_POSTGRES_DSN": postgres_backend.dsn(admin, postgres_backend.APP, name),
           "TENANTFLOW_POSTGRES_MIGRATION_DSN": postgres_backend.dsn(admin, postgres_backend.OWNER, name)}
    try:
        before = cli("tenants", "list", env_extra=env)
        assert before.returncode != 0 and "migration 0001_initial.sql and" in before.stderr
        assert "run `tenantflow db migrate`" in before.stderr and len(before.stderr.strip().splitlines()) == 1
        first = cli("db", "migrate", env_extra=env)
        assert first.returncode == 0 and first.stdout.startswith("applied: 0001_initial.sql")
        assert "0004_tenant_isolation.sql" in first.stdout
        again = cli("db", "migrate", env_extra=env)
        assert again.returncode == 0 and again.stdout.strip() == "schema is up to date"
        assert cli("tenants", "add", "acme", env_extra=env).returncode == 0
        assert "acme" in cli("tenants", "list", env_extra=env).stdout
        no_owner = cli("db", "migrate", env_extra={**env, "TENANTFLOW_POSTGRES_MIGRATION_DSN": ""})
        assert no_owner.returncode != 0 and "TENANTFLOW_POSTGRES_MIGRATION_DSN" in no_owner.stderr
    finally:
        await postgres_backend.admin_execute(admin, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))
