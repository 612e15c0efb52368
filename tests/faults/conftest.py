"""Fault tests run against servers they own, so that stopping or restarting one disturbs no other test."""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess

import pytest

from shared.secret import Secret
from shared.settings import Settings
from shared.storage.postgres.database import migrate
from tests.backends.fixtures import fresh_encryption_keys, require_service
from tests.backends.pg_cluster import Cluster

OWNER, APP = "tenantflow_owner", "tenantflow_app"


class ThrowawayPostgres(Cluster):
    """A PostgreSQL cluster of one test, with commits that survive a crash of the server (as in production):
    `restart()` is an immediate stop (as after a crash) and a start."""

    def __init__(self) -> None:
        super().__init__("-c synchronous_commit=on")

    def restart(self) -> None:
        self.stop()
        self.start()

    async def settings(self) -> Settings:
        """A migrated database with the production roles (owner; app role without BYPASSRLS)."""
        from psycopg import AsyncConnection, sql

        async with await AsyncConnection.connect(self.admin_dsn, autocommit=True) as connection:
            await connection.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER CREATEDB").format(sql.Identifier(OWNER)))
            await connection.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOBYPASSRLS").format(
                sql.Identifier(APP)))
            await connection.execute(sql.SQL("CREATE DATABASE tenantflow OWNER {}").format(sql.Identifier(OWNER)))
        base = f"postgresql://{{}}@127.0.0.1:{self.port}/tenantflow"
        async with await AsyncConnection.connect(base.format("postgres"), autocommit=True) as connection:
            await connection.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
            await connection.execute(sql.SQL("GRANT ALL ON SCHEMA public TO {}").format(sql.Identifier(OWNER)))
        await migrate(base.format(OWNER), base.format(APP))
        return dataclasses.replace(Settings.from_env({}), store="postgres", postgres_dsn=Secret(base.format(APP)),
                                   postgres_migration_dsn=Secret(base.format(OWNER)),
                                   encryption_keys=fresh_encryption_keys())


@pytest.fixture
def throwaway_postgres():
    require_service("TENANTFLOW_TEST_POSTGRES_ADMIN_DSN")  # the same PostgreSQL install scripts/services.sh uses
    server = ThrowawayPostgres()
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            server.stop()
        server.remove()
