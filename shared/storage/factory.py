"""Picks the storage backend from settings. Each backend's SDK is imported only when that backend is used.

A store that cannot be opened (PostgreSQL down, an unusable SQLite file, Azurite unreachable) raises
StoreUnavailable with its cause in one line and no secret: callers answer 503 and try again later. The adapters
raise it themselves; a PostgreSQL error met while opening (the migration's own connection) is translated here
the same way."""

from __future__ import annotations

from typing import Any

from shared.settings import Settings
from shared.storage.ports import Stores, StoreUnavailable


async def open_stores(settings: Settings, credential: Any = None) -> Stores:
    try:
        if settings.store == "postgres":
            from shared.storage.postgres import open_postgres_stores

            return await open_postgres_stores(settings)
        if settings.store == "table":
            from shared.storage.table import open_table_stores

            return await open_table_stores(settings, credential)
        from shared.storage.sqlite import open_sqlite_stores

        return await open_sqlite_stores(settings)
    except StoreUnavailable:
        raise
    except Exception as exc:
        unavailable = opening_failure(settings, exc)
        if unavailable is None:
            raise
        raise unavailable from None


def opening_failure(settings: Settings, exc: Exception) -> StoreUnavailable | None:
    """The StoreUnavailable of an error met while opening the store, or None for an error that is not the
    store's (or that its adapter already names)."""
    if settings.store == "postgres":
        import psycopg
        import psycopg_pool

        if isinstance(exc, psycopg.OperationalError | psycopg_pool.PoolTimeout | OSError):
            from shared.storage.postgres.database import PostgresDatabase

            assert settings.postgres_dsn is not None
            return PostgresDatabase(settings.postgres_dsn.reveal()).unavailable(exc)
    return None
