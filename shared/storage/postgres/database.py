"""Connection pool, per-transaction tenant scope, and migrations for PostgreSQL (psycopg 3).

The running app connects as the app role only (TENANTFLOW_POSTGRES_DSN: not the owner, no BYPASSRLS) and never
migrates: `tenantflow db migrate` applies migrations as the owner (TENANTFLOW_POSTGRES_MIGRATION_DSN) in a deploy
step, and an app whose schema is behind stops at start with `SchemaNotReady` naming the missing migration."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from psycopg import AsyncConnection, DataError, OperationalError, errors, pq, sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from shared.storage.ports import NotFound, StoreUnavailable

MIGRATION_LOCK = 7_270_707
ENTRA_SCOPE = "https://ossrdbms-aad.database.windows.net/.default"


class EntraTokenPassword:
    """The password of each new connection when the app signs in with Entra: an access token for Azure Database for
    PostgreSQL, from the managed identity (AZURE_CLIENT_ID names a user-assigned one). Tokens last about an hour;
    a connection only needs a valid one when it opens."""

    def __init__(self, credential: Any = None) -> None:
        self.credential = credential

    async def __call__(self) -> str:
        if self.credential is None:
            from azure.identity.aio import DefaultAzureCredential
            self.credential = DefaultAzureCredential()
        token = await self.credential.get_token(ENTRA_SCOPE)
        return str(token.token)


class SchemaNotReady(StoreUnavailable):
    """The database schema is behind this app's code (answered as an unavailable store, 503); the message names
    the migration and the command to run."""


class PostgresDatabase:
    """Connections are in autocommit mode: a single statement (a call of one of the migration's functions) is
    its own transaction and costs one round trip; `transaction()` opens an explicit one. `max_size` is
    TENANTFLOW_POSTGRES_POOL_SIZE; `password`, when given, is asked for each new connection (an Entra token)."""

    def __init__(self, dsn: str, min_size: int = 1, max_size: int = 10, timeout: float = 10.0,
                 password: Callable[[], Awaitable[str]] | None = None) -> None:
        info = conninfo_to_dict(dsn)
        self.address = f"{info.get('host') or 'localhost'}:{info.get('port') or 5432}"
        options: dict[str, Any] = {"row_factory": dict_row, "autocommit": True}

        async def options_with_password() -> dict[str, Any]:
            assert password is not None
            return {**options, "password": await password()}

        self.checking: asyncio.Task[None] | None = None
        self.pool = AsyncConnectionPool(dsn, min_size=min(min_size, max_size), max_size=max_size, open=False,
                                        timeout=timeout, kwargs=options_with_password if password else options)

    async def open(self) -> None:
        try:
            await self.pool.open(wait=True, timeout=10)  # a request waits at most this for a server that is down
        except PoolTimeout as exc:
            await self.pool.close()
            raise await self.why_not(exc) from None
        try:
            await self.check_schema()
        except BaseException:
            await self.pool.close()
            raise

    async def why_not(self, timeout: PoolTimeout) -> StoreUnavailable:
        """The reason no connection could be made (refused, authentication, …), from one direct attempt."""
        options: Any = self.pool.kwargs
        try:
            kwargs = await options() if callable(options) else dict(options or {})
            connection = await AsyncConnection.connect(str(self.pool.conninfo), connect_timeout=5, **kwargs)
        except OperationalError as exc:
            return self.unavailable(exc)
        except Exception:  # noqa: BLE001 - any other failure: report the pool's timeout
            return self.unavailable(timeout)
        await connection.close()
        return self.unavailable(timeout)

    async def check_schema(self) -> None:
        """The app never migrates: a schema behind the code stops it with the migration to apply."""
        async with self.pool.connection() as connection:
            try:
                rows: list[Any] = await (await connection.execute("SELECT version FROM schema_migrations")).fetchall()
                applied = {int(row["version"]) for row in rows}
            except (errors.UndefinedTable, errors.InsufficientPrivilege):
                applied = set()
        missing = [name for version, name, _ in migrations() if version not in applied]
        if missing:
            more = f" and {len(missing) - 1} more are" if len(missing) > 1 else " is"
            raise SchemaNotReady(f"PostgreSQL schema is behind this app: migration {missing[0]}{more} not applied; "
                                 "run `tenantflow db migrate` (with TENANTFLOW_POSTGRES_MIGRATION_DSN set)")

    def unavailable(self, exc: BaseException) -> StoreUnavailable:
        """One line naming the cause and the server, never the DSN's credentials. A lost connection usually means
        the server restarted: every idle pooled connection is then checked (in the background) and the dead ones
        replaced, so that the next requests do not fail on them one by one."""
        if isinstance(exc, OperationalError) and (self.checking is None or self.checking.done()):
            self.checking = asyncio.get_running_loop().create_task(self.pool.check())
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "refused" in text.lower():
            text = "connection refused"
        elif isinstance(exc, PoolTimeout):
            text = "no connection could be made in time"
        return StoreUnavailable(f"PostgreSQL at {self.address} is unavailable: {text}")

    async def call(self, query: str, params: Sequence[str | None]) -> str | None:
        """One statement in autocommit: one round trip, sent on the pooled connection's libpq handle (`one_trip`:
        about half the client CPU of a cursor, and the run path makes one or two per run). `query` has $1…
        placeholders for text parameters; the first column of the first row comes back as text. A pooled
        connection that the server dropped (a restart) is replaced and the statement sent once more; other failures
        raise StoreUnavailable. A NUL in a value (no stored id holds one) is NotFound, as for `transaction`."""
        if any(p is not None and "\x00" in p for p in params):
            raise NotFound("no such record: a value holds a NUL character")
        encoded = [None if p is None else p.encode() for p in params]
        for attempt in (1, 2):
            try:
                async with self.pool.connection() as connection:
                    return await one_trip(connection, query.encode(), encoded)
            except PoolTimeout as exc:
                raise self.unavailable(exc) from None
            except OperationalError as exc:
                if attempt == 2 or not connection.broken:
                    raise self.unavailable(exc) from None
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self.checking is not None:
            with contextlib.suppress(Exception):
                await self.checking
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
            raise nul_refused(exc) from None
        except (OperationalError, PoolTimeout) as exc:
            raise self.unavailable(exc) from None


async def one_trip(connection: AsyncConnection[Any], query: bytes, params: list[bytes | None]) -> str | None:
    """Sends one statement with text parameters and reads its first value, through libpq directly (psycopg's
    public `pgconn`), waiting on the socket with the event loop. The connection is the caller's alone (from the
    pool, autocommit, idle), and is idle again afterwards; one left mid-statement (cancelled) is closed, so that
    the pool replaces it. Errors are psycopg's own: the server's as `error_from_result` makes them, a lost
    connection as OperationalError (then `connection.broken`)."""
    pgconn = connection.pgconn
    loop = asyncio.get_running_loop()
    try:
        pgconn.send_query_params(query, params)
        while pgconn.flush():
            await socket_ready(loop, pgconn.socket, writable=True)
        pgconn.consume_input()
        while pgconn.is_busy():
            await socket_ready(loop, pgconn.socket, writable=False)
            pgconn.consume_input()
    except BaseException:
        if pgconn.status != pq.ConnStatus.BAD and pgconn.transaction_status == pq.TransactionStatus.ACTIVE:
            await connection.close()
        raise
    result = pgconn.get_result()
    while pgconn.get_result() is not None:
        pass
    if result is None:
        raise OperationalError("the server sent no result")
    encoding = connection.info.encoding
    if result.status != pq.ExecStatus.TUPLES_OK:
        raise errors.error_from_result(result, encoding=encoding)
    value = result.get_value(0, 0) if result.ntuples else None
    return None if value is None else value.decode(encoding)


async def socket_ready(loop: asyncio.AbstractEventLoop, fd: int, writable: bool) -> None:
    ready = loop.create_future()
    (loop.add_writer if writable else loop.add_reader)(fd, ready.set_result, None)
    try:
        await ready
    finally:
        (loop.remove_writer if writable else loop.remove_reader)(fd)


def nul_refused(exc: DataError) -> Exception:
    """psycopg refuses NUL in text before sending it: no row can match, so that is the port's NotFound."""
    return NotFound("no such record: a value holds a NUL character") if "NUL" in str(exc) else exc


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
