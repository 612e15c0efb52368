"""Connection pool, per-transaction tenant scope, and migrations for PostgreSQL (psycopg 3)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from psycopg import AsyncConnection, OperationalError, sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from shared.storage.ports import StoreUnavailable

MIGRATION_LOCK = 7_270_707


class PostgresDatabase:
    """Connections are in autocommit mode: a single statement (a call of one of the migration's functions) is
    its own transaction and costs one round trip; `transaction()` opens an explicit one."""

    def __init__(self, dsn: str, min_size: int = 1, max_size: int = 10, timeout: float = 10.0) -> None:
        info = conninfo_to_dict(dsn)
        self.address = f"{info.get('host') or 'localhost'}:{info.get('port') or 5432}"
        self.pool = AsyncConnectionPool(dsn, min_size=min_size, max_size=max_size, open=False, timeout=timeout,
                                        kwargs={"row_factory": dict_row, "autocommit": True})

    async def open(self) -> None:
        try:
            await self.pool.open(wait=True, timeout=30)
        except PoolTimeout as exc:
            await self.pool.close()
            raise self.unavailable(exc) from None

    def unavailable(self, exc: BaseException) -> StoreUnavailable:
        """One line naming the cause and the server, never the DSN's credentials."""
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "refused" in text.lower():
            text = "connection refused"
        elif isinstance(exc, PoolTimeout):
            text = "no connection could be made in time"
        return StoreUnavailable(f"PostgreSQL at {self.address} is unavailable: {text}")

    async def call(self, query: str, params: Any) -> dict[str, Any]:
        """One statement in autocommit: one round trip. A pooled connection that the server dropped (a restart)
        is replaced and the statement sent once more; other failures raise StoreUnavailable."""
        for attempt in (1, 2):
            try:
                async with self.pool.connection() as connection:
                    return await (await connection.execute(query, params)).fetchone()  # type: ignore[return-value]
            except PoolTimeout as exc:
                raise self.unavailable(exc) from None
            except OperationalError as exc:
                if attempt == 2 or not connection.broken:
                    raise self.unavailable(exc) from None
        raise AssertionError("unreachable")

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def transaction(self, tenant_id: str | None = None, operator: bool = False) -> AsyncIterator[Any]:
        """A transaction whose RLS scope is one tenant (or, for operator work, all). The setting is
        transaction-local, so the pooled connection carries nothing into its next use."""
        try:
            async with self.pool.connection() as connection:
                async with connection.transaction():
                    if tenant_id is not None:
                        await connection.execute("SELECT set_config('tenantflow.tenant_id', %s, true)", (tenant_id,))
                    if operator:
                        await connection.execute("SELECT set_config('tenantflow.scope', 'operator', true)")
                    yield connection
        except (OperationalError, PoolTimeout) as exc:
            raise self.unavailable(exc) from None


def migrations() -> list[tuple[int, str, str]]:
    folder = resources.files("shared.storage.postgres") / "migrations"
    found = [(int(e.name.split("_", 1)[0]), e.name, e.read_text(encoding="utf-8"))
             for e in folder.iterdir() if e.name.endswith(".sql")]
    return sorted(found)


async def migrate(owner_dsn: str, app_dsn: str) -> list[str]:
    """Applies pending migrations as the owner (under an advisory lock, so concurrent starts don't race) and
    grants the app role DML rights. Returns the names applied."""
    applied: list[str] = []
    app_role = str(conninfo_to_dict(app_dsn).get("user") or "")
    owner_role = str(conninfo_to_dict(owner_dsn).get("user") or "")
    async with await AsyncConnection.connect(owner_dsn, autocommit=False) as connection:
        async with connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            await connection.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, "
                                     "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
            cursor = await connection.execute("SELECT version FROM schema_migrations")
            done = {row[0] for row in await cursor.fetchall()}
            for version, name, text in migrations():
                if version in done:
                    continue
                await connection.execute(text)  # type: ignore[arg-type]
                await connection.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                                         (version, name))
                applied.append(name)
            if app_role and app_role != owner_role:
                role = sql.Identifier(app_role)
                await connection.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(role))
                await connection.execute(sql.SQL(
                    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}").format(role))
                await connection.execute(sql.SQL("REVOKE ALL ON schema_migrations FROM {}").format(role))
                await connection.execute(sql.SQL("GRANT SELECT ON schema_migrations TO {}").format(role))
    return applied
