"""Azure Table storage adapters (azure-data-tables; Azurite locally). PartitionKey = tenant id."""

from __future__ import annotations

from typing import Any

from shared.settings import Settings
from shared.storage.ports import Stores


async def open_table_stores(settings: Settings, credential: Any = None) -> Stores:
    from shared.storage.table.client import TableClients
    from shared.storage.table.members import TableTenantMemberStore
    from shared.storage.table.model_aliases import TableModelAliasStore
    from shared.storage.table.stores import (
        TableBookkeeping,
        TableBudgetStore,
        TableCredentialStore,
        TableHealth,
        TableReplayGuard,
        TableRunStore,
        TableScheduleStore,
        TableTenantStore,
        TableUsageLedger,
        TableUsageQueries,
    )

    assert settings.table_connection is not None  # Settings.from_env guarantees it for this store
    tables = TableClients(settings.table_connection.reveal(), settings.table_prefix, credential)
    await tables.open()
    runs = TableRunStore(tables)
    bookkeeping = TableBookkeeping(tables, runs)
    return Stores(
        backend="table",
        tenants=TableTenantStore(tables),
        credentials=TableCredentialStore(tables),
        runs=runs,
        usage=TableUsageLedger(tables, bookkeeping),
        usage_queries=TableUsageQueries(tables),
        budgets=TableBudgetStore(tables),
        bookkeeping=bookkeeping,
        schedules=TableScheduleStore(tables),
        replay=TableReplayGuard(tables),
        health=TableHealth(tables),
        members=TableTenantMemberStore(tables),
        aliases=TableModelAliasStore(tables),
        closer=tables.close,
    )
