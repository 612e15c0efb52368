"""PostgreSQL isolation below the application: row-level security and role rights."""

from __future__ import annotations

import asyncio

import pytest
from psycopg import AsyncConnection

from shared.storage.factory import open_stores
from shared.storage.models import StoredCredential
from shared.storage.postgres.database import migrate
from tests.backends import postgres_backend


@pytest.fixture
async def pg(tmp_path):
    settings = await postgres_backend.provision(tmp_path)
    stores = await open_stores(settings)
    for tenant in ("tenant-a", "tenant-b"):
        await stores.credentials.put(StoredCredential(tenant, "foundry", "azure_openai", "https://x.openai.azure.com",
                                                      secret_blob=f"v1.k.{tenant}", key_id="k"))
    yield settings, stores
    await stores.close()
    await postgres_backend.dispose(settings)


async def raw_rows(dsn: str, tenant: str | None) -> list[tuple]:
    async with await AsyncConnection.connect(dsn) as connection:
        async with connection.transaction():
            if tenant is not None:
                await connection.execute("SELECT set_config('tenantflow.tenant_id', %s, true)", (tenant,))
            return await (await connection.execute("SELECT tenant_id, secret_blob FROM credentials")).fetchall()


async def test_raw_select_sees_only_the_scoped_tenant(pg):
    settings, _ = pg
    app_dsn = settings.postgres_dsn.reveal()
    assert await raw_rows(app_dsn, "tenant-a") == [("tenant-a", "v1.k.tenant-a")]
    assert await raw_rows(app_dsn, "tenant-b") == [("tenant-b", "v1.k.tenant-b")]
    assert await raw_rows(app_dsn, None) == []
    # the owner is bound by FORCE ROW LEVEL SECURITY too
    assert await raw_rows(settings.postgres_migration_dsn.reveal(), "tenant-a") == [("tenant-a", "v1.k.tenant-a")]


async def test_app_role_is_not_owner_nor_superuser(pg):
    settings, _ = pg
    async with await AsyncConnection.connect(settings.postgres_dsn.reveal()) as connection:
        role = await (await connection.execute(
            "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")).fetchone()
        owner = await (await connection.execute(
            "SELECT tableowner = current_user FROM pg_tables WHERE tablename = 'credentials'")).fetchone()
        forced = await (await connection.execute(
            "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = 'credentials'")).fetchone()
    assert role == (False, False) and owner == (False,) and forced == (True, True)


async def test_pooled_connection_carries_no_tenant_setting(pg):
    _, stores = pg
    db = stores.credentials.db
    await stores.credentials.get("tenant-a", "foundry")
    async with db.pool.connection() as connection:
        value = await (await connection.execute("SELECT current_setting('tenantflow.tenant_id', true)")).fetchone()
        await connection.rollback()
    assert value["current_setting"] in (None, "")
    assert await stores.credentials.get("tenant-b", "foundry") is not None
    assert (await stores.credentials.get("tenant-a", "foundry")).tenant_id == "tenant-a"


async def test_migrations_are_idempotent_and_safe_to_run_concurrently(pg):
    settings, _ = pg
    owner, app = settings.postgres_migration_dsn.reveal(), settings.postgres_dsn.reveal()
    results = await asyncio.gather(*[migrate(owner, app) for _ in range(4)])
    assert results == [[], [], [], []]
