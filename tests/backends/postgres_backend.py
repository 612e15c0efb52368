"""A fresh PostgreSQL database per test, cloned from a migrated template; owner and app roles as in production:
the app role owns nothing, is not a superuser and cannot bypass row-level security."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from psycopg import AsyncConnection, sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from shared.secret import Secret
from shared.settings import Settings
from shared.storage.postgres import migrate_postgres
from tests.backends.fixtures import fresh_encryption_keys, require_service

OWNER, APP = "tenantflow_owner", "tenantflow_app"
TEMPLATE = f"tf_pg_template_{uuid.uuid4().hex[:8]}"
templates_ready: set[str] = set()  # admin DSNs (clusters) whose template is migrated


def dsn(admin: str, user: str, dbname: str) -> str:
    return make_conninfo(admin, user=user, dbname=dbname)


async def admin_execute(admin: str, *statements: sql.Composable | str) -> None:
    async with await AsyncConnection.connect(admin, autocommit=True) as connection:
        for statement in statements:
            await connection.execute(statement)  # type: ignore[arg-type]


async def ensure_template(admin: str) -> None:
    if admin in templates_ready:
        return
    async with await AsyncConnection.connect(admin, autocommit=True) as connection:
        for role, options in ((OWNER, "LOGIN NOSUPERUSER CREATEDB"), (APP, "LOGIN NOSUPERUSER NOBYPASSRLS")):
            exists = await (await connection.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))).fetchone()
            if not exists:
                await connection.execute(sql.SQL("CREATE ROLE {} " + options).format(sql.Identifier(role)))
        await connection.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
            sql.Identifier(TEMPLATE), sql.Identifier(OWNER)))
    await admin_execute(dsn(admin, "postgres", TEMPLATE), "REVOKE ALL ON SCHEMA public FROM PUBLIC",
                        sql.SQL("GRANT ALL ON SCHEMA public TO {}").format(sql.Identifier(OWNER)))
    # the path of `tenantflow db migrate`: the app never migrates
    await migrate_postgres(dataclasses.replace(Settings.from_env({}), store="postgres",
                                               postgres_dsn=Secret(dsn(admin, APP, TEMPLATE)),
                                               postgres_migration_dsn=Secret(dsn(admin, OWNER, TEMPLATE))))
    templates_ready.add(admin)


async def provision(tmp_path) -> Settings:
    admin = require_service("TENANTFLOW_TEST_POSTGRES_ADMIN_DSN")
    await ensure_template(admin)
    name = f"tf_pg_{uuid.uuid4().hex[:12]}"
    await admin_execute(admin, sql.SQL("CREATE DATABASE {} TEMPLATE {} OWNER {}").format(
        sql.Identifier(name), sql.Identifier(TEMPLATE), sql.Identifier(OWNER)))
    return dataclasses.replace(Settings.from_env({}), store="postgres", postgres_dsn=Secret(dsn(admin, APP, name)),
                               postgres_migration_dsn=Secret(dsn(admin, OWNER, name)),
                               encryption_keys=fresh_encryption_keys())


async def dispose(settings: Settings) -> None:
    assert settings.postgres_dsn is not None
    info = conninfo_to_dict(settings.postgres_dsn.reveal())
    admin = require_service("TENANTFLOW_TEST_POSTGRES_ADMIN_DSN")
    await admin_execute(admin, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
        sql.Identifier(str(info["dbname"]))))


@asynccontextmanager
async def bare_database(prefix: str) -> AsyncIterator[tuple[str, str]]:
    """A new database owned by the owner role with no schema at all, dropped afterwards: (admin DSN, its name)."""
    admin = require_service("TENANTFLOW_TEST_POSTGRES_ADMIN_DSN")
    await ensure_template(admin)  # the roles exist
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    await admin_execute(admin, sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name),
                                                                             sql.Identifier(OWNER)))
    try:
        yield admin, name
    finally:
        await admin_execute(admin, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
