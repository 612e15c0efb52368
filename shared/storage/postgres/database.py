"""Connection pool, per-transaction tenant scope, and migrations for PostgreSQL (psycopg 3).

The running app connects as the app role only (TENANTFLOW_POSTGRES_DSN: not the owner, no BYPASSRLS) and never
migrates: `tenantflow db migrate` applies migrations as the owner (TENANTFLOW_POSTGRES_MIGRATION_DSN) in a deploy
step, and an app whose schema is behind stops at start with `SchemaNotReady` naming the missing migration."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from psycopg import AsyncConnection, DataError, errors, sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from shared.storage.ports import NotFound

MIGRATION_LOCK = 7_270_707


class SchemaNotReady(RuntimeError):
    """The database schema is behind this app's code; the message names the migration and the command to run."""


class PostgresDatabase:
    def __init__(self, dsn: str, min_size: int = 1, max_size: int = 10) -> None:
        self.pool = AsyncConnectionPool(dsn, min_size=min_size, max_size=max_size, open=False,
                                        kwargs={"row_factory": dict_row, "autocommit": False})

    async def open(self) -> None:
        await self.pool.open(wait=True, timeout=30)
        try:
            await self.check_schema()
        except BaseException:
            await self.pool.close()
            raise

    async def check_schema(self) -> None:
        async with self.pool.connection() as connection:
            try:
                rows: list[Any] = await (await connection.execute("SELECT version FROM schema_migrations")).fetchall()
                applied = {int(row["version"]) for row in rows}
            except (errors.UndefinedTable, errors.InsufficientPrivilege):
                applied = set()
            await connection.rollback()
        missing = [name for version, name, _ in migrations() if version not in applied]
        if missing:
            more = f" and {len(missing) - 1} more are" if len(missing) > 1 else " is"
            raise SchemaNotReady(f"PostgreSQL schema is behind this app: migration {missing[0]}{more} not applied; "
                                 "run `tenantflow db migrate` (with TENANTFLOW_POSTGRES_MIGRATION_DSN set)")

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def transaction(self, tenant_id: str | None = None) -> AsyncIterator[Any]:
        """A transaction whose RLS scope is one tenant (no tenant: no tenant row is visible; cross-tenant reads go
        through the tenantflow_* functions of migration 0004). The setting is transaction-local, so the pooled
        connection carries nothing into its next use. A NUL in any value (no stored id holds one) is NotFound,
        not a driver error."""
        if tenant_id is not None and "\x00" in tenant_id:
            raise NotFound("no such record: the tenant id holds a NUL character")
        try:
            async with self.pool.connection() as connection:
                async with connection.transaction():
                    if tenant_id is not None:
                        await connection.execute("SELECT set_config('tenantflow.tenant_id', %s, true)", (tenant_id,))
                    yield connection
        except DataError as exc:
            if "NUL" not in str(exc):
                raise
            raise NotFound("no such record: a value holds a NUL character") from None


def migrations() -> list[tuple[int, str, str]]:
    folder = resources.files("shared.storage.postgres") / "migrations"
    found = [(int(e.name.split("_", 1)[0]), e.name, e.read_text(encoding="utf-8"))
             for e in folder.iterdir() if e.name.endswith(".sql")]
    return sorted(found)


async def migrate(owner_dsn: str, app_dsn: str) -> list[str]:
    """Applies pending migrations as the owner (under an advisory lock, so concurrent runs don't race; idempotent)
    and grants the app role DML rights and EXECUTE on the tenantflow_* functions. Returns the names applied."""
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
                functions = await (await connection.execute(
                    "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                    "WHERE n.nspname = 'public' AND p.proname LIKE 'tenantflow\\_%'")).fetchall()
                for (signature,) in functions:
                    await connection.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(
                        sql.SQL(signature), role))
    return applied
