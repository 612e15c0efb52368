"""Picks the storage backend from settings. Each backend's SDK is imported only when that backend is used.

A store that cannot be opened (PostgreSQL down, an unusable SQLite file, Azurite unreachable) raises
StoreUnavailable with its cause in one line and no secret: callers answer 503 and try again later."""

from __future__ import annotations

from typing import Any

from shared.settings import Settings
from shared.storage.ports import Stores, StoreUnavailable
from shared.storage.store_faults import postgres_cause, sqlite_cause


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
        cause = opening_failure(settings, exc)
        if cause is None:
            raise
        raise StoreUnavailable(cause) from None


def opening_failure(settings: Settings, exc: Exception) -> str | None:
    """One line naming why the store cannot be opened, or None for an error that is not the store's."""
    import sqlite3

    if isinstance(exc, sqlite3.Error | OSError) and settings.store == "sqlite":
        return sqlite_cause(str(settings.sqlite_path), exc)
    if settings.store == "postgres":
        import psycopg
        import psycopg_pool

        if isinstance(exc, psycopg.OperationalError | psycopg_pool.PoolTimeout | OSError):
            assert settings.postgres_dsn is not None
            return f"PostgreSQL: {postgres_cause(settings.postgres_dsn.reveal(), exc)}"
    if settings.store == "table":
        from azure.core.exceptions import AzureError

        if isinstance(exc, AzureError | OSError):
            return f"Table storage: cannot be reached ({type(exc).__name__})"
    return None
