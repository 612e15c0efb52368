"""Picks the storage backend from settings. Each backend's SDK is imported only when that backend is used.

A store that cannot be opened (PostgreSQL down, an unusable SQLite file, Azurite unreachable) raises
StoreUnavailable with its cause in one line and no secret: callers answer 503 and try again later."""

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
            return f"PostgreSQL: {postgres_cause(settings, exc)}"
    if settings.store == "table":
        from azure.core.exceptions import AzureError

        if isinstance(exc, AzureError | OSError):
            return f"Table storage: cannot be reached ({type(exc).__name__})"
    return None


def sqlite_cause(path: str, exc: Exception) -> str:
    text = str(exc).lower()
    if "readonly" in text or "read-only" in text or isinstance(exc, PermissionError):
        reason = "read-only database"
    elif "disk is full" in text or "no space" in text:
        reason = "disk full"
    elif "not a database" in text or "malformed" in text or "corrupt" in text:
        reason = "corrupt file"
    elif "unable to open" in text:
        reason = "cannot open the file"
    else:
        reason = type(exc).__name__
    return f"SQLite {path}: {reason}"


def postgres_cause(settings: Settings, exc: Exception) -> str:
    """`connection refused to host:port` when the server does not answer; never the DSN's password."""
    from psycopg.conninfo import conninfo_to_dict

    assert settings.postgres_dsn is not None
    info = conninfo_to_dict(settings.postgres_dsn.reveal())
    where = f"{info.get('host') or 'localhost'}:{info.get('port') or 5432}"
    text = str(exc).lower()
    if "refused" in text or "timeout" in text or "couldn't get a connection" in text or "no such file" in text:
        return f"connection refused to {where}"
    if "password authentication" in text or "authentication failed" in text:
        return f"authentication failed at {where}"
    if "does not exist" in text:
        return f"the database does not exist at {where}"
    return f"cannot connect to {where} ({type(exc).__name__})"
