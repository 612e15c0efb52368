"""One line naming why a store cannot be used (read-only database, disk full, corrupt file, connection refused to
host:port), for StoreUnavailable. Never a secret: no DSN, no password, no connection string."""

from __future__ import annotations

from typing import Any


def sqlite_cause(path: str, exc: Exception) -> str:
    text = str(exc).lower()
    if "readonly" in text or "read-only" in text or isinstance(exc, PermissionError) or not writable(path):
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


def writable(path: str) -> bool:
    """False when the file (or, before it exists, its folder) cannot be written: a read-only file system or
    permissions. A missing folder counts as writable (it is created on open)."""
    import os

    target = path if os.path.exists(path) else os.path.dirname(path) or "."
    return not os.path.exists(target) or os.access(target, os.W_OK)


def postgres_cause(dsn: str, exc: Exception) -> str:
    """`connection refused to host:port` when the server does not answer; never the DSN's password."""
    from psycopg.conninfo import conninfo_to_dict

    info: dict[str, Any] = conninfo_to_dict(dsn)
    where = f"{info.get('host') or 'localhost'}:{info.get('port') or 5432}"
    text = str(exc).lower()
    if "refused" in text or "timeout" in text or "couldn't get a connection" in text or "no such file" in text:
        return f"connection refused to {where}"
    if "password authentication" in text or "authentication failed" in text:
        return f"authentication failed at {where}"
    if "does not exist" in text:
        return f"the database does not exist at {where}"
    return f"cannot connect to {where} ({type(exc).__name__})"
