"""PostgreSQL adapters (psycopg 3 + psycopg_pool), with row-level security on tenant data."""

from __future__ import annotations

from shared.settings import Settings
from shared.storage.ports import Stores


async def open_postgres_stores(settings: Settings) -> Stores:
    from shared.storage.postgres.database import PostgresDatabase, migrate
    from shared.storage.postgres.members import PostgresTenantMemberStore
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
    app_dsn = settings.postgres_dsn.reveal()
    owner_dsn = settings.postgres_migration_dsn.reveal() if settings.postgres_migration_dsn else app_dsn
    await migrate(owner_dsn, app_dsn)
    db = PostgresDatabase(app_dsn)
    await db.open()
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
        closer=db.close,
    )
