"""PostgreSQL adapters (psycopg 3 + psycopg_pool), with row-level security on tenant data."""

from __future__ import annotations

from shared.settings import Settings
from shared.storage.ports import Stores


async def open_postgres_stores(settings: Settings) -> Stores:
    from shared.storage.postgres.database import EntraTokenPassword, PostgresDatabase
    from shared.storage.postgres.members import PostgresTenantMemberStore
    from shared.storage.postgres.model_aliases import PostgresModelAliasStore
    from shared.storage.postgres.stores import (
        PostgresBookkeeping,
        PostgresBudgetStore,
        PostgresCredentialStore,
        PostgresHealth,
        PostgresReplayGuard,
        PostgresRunStore,
        PostgresScheduleStore,
        PostgresTenantStore,
        PostgresUsageLedger,
        PostgresUsageQueries,
    )

    assert settings.postgres_dsn is not None  # Settings.from_env guarantees it for this store
    db = PostgresDatabase(settings.postgres_dsn.reveal(), max_size=settings.postgres_pool_size,
                          password=EntraTokenPassword() if settings.postgres_entra else None)
    await db.open()  # never migrates (that is `tenantflow db migrate`); SchemaNotReady when the schema is behind
    return Stores(
        backend="postgres",
        tenants=PostgresTenantStore(db),
        credentials=PostgresCredentialStore(db),
        runs=PostgresRunStore(db),
        usage=PostgresUsageLedger(db),
        usage_queries=PostgresUsageQueries(db),
        budgets=PostgresBudgetStore(db),
        bookkeeping=PostgresBookkeeping(db),
        schedules=PostgresScheduleStore(db),
        replay=PostgresReplayGuard(db),
        health=PostgresHealth(db),
        members=PostgresTenantMemberStore(db),
        aliases=PostgresModelAliasStore(db),
        closer=db.close,
    )


async def migrate_postgres(settings: Settings) -> list[str]:
    """`tenantflow db migrate`: applies pending migrations as the owner (TENANTFLOW_POSTGRES_MIGRATION_DSN) and
    grants the app role of TENANTFLOW_POSTGRES_DSN its rights. Returns the names applied (none: up to date)."""
    from shared.storage.postgres.database import migrate

    if settings.postgres_migration_dsn is None or settings.postgres_dsn is None:
        raise ValueError("TENANTFLOW_POSTGRES_MIGRATION_DSN and TENANTFLOW_POSTGRES_DSN: both are required to migrate "
                         "(the owner role applies migrations and grants the app role)")
    return await migrate(settings.postgres_migration_dsn.reveal(), settings.postgres_dsn.reveal())
