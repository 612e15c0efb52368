"""SQLite adapters: the embedded default store (local use, the demo)."""

from __future__ import annotations

from shared.settings import Settings
from shared.storage.ports import Stores
from shared.storage.sqlite.database import SqliteDatabase
from shared.storage.sqlite.members import SqliteTenantMemberStore
from shared.storage.sqlite.model_aliases import SqliteModelAliasStore
from shared.storage.sqlite.stores import (
    SqliteBookkeeping,
    SqliteBudgetStore,
    SqliteCredentialStore,
    SqliteHealth,
    SqliteReplayGuard,
    SqliteRunStore,
    SqliteScheduleStore,
    SqliteTenantStore,
    SqliteUsageLedger,
    SqliteUsageQueries,
)


async def open_sqlite_stores(settings: Settings) -> Stores:
    db = SqliteDatabase(settings.sqlite_path)
    try:
        await db.migrate()
    except BaseException:
        await db.close()  # an unusable file: its worker thread must not outlive the attempt (callers retry)
        raise
    return Stores(
        backend="sqlite",
        tenants=SqliteTenantStore(db),
        credentials=SqliteCredentialStore(db),
        runs=SqliteRunStore(db),
        usage=SqliteUsageLedger(db),
        usage_queries=SqliteUsageQueries(db),
        budgets=SqliteBudgetStore(db),
        bookkeeping=SqliteBookkeeping(db),
        schedules=SqliteScheduleStore(db),
        replay=SqliteReplayGuard(db),
        health=SqliteHealth(db),
        members=SqliteTenantMemberStore(db),
        aliases=SqliteModelAliasStore(db),
        closer=db.close,
    )
