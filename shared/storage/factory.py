"""Picks the storage backend from settings. Each backend's SDK is imported only when that backend is used."""

from __future__ import annotations

from shared.settings import Settings
from shared.storage.ports import Stores


async def open_stores(settings: Settings) -> Stores:
    if settings.store == "postgres":
        from shared.storage.postgres import open_postgres_stores

        return await open_postgres_stores(settings)
    if settings.store == "table":
        from shared.storage.table import open_table_stores

        return await open_table_stores(settings)
    from shared.storage.sqlite import open_sqlite_stores

    return await open_sqlite_stores(settings)
