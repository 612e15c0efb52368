"""The app's PostgreSQL pool: its size is TENANTFLOW_POSTGRES_POOL_SIZE and, with Entra sign-in, every new
connection carries a fresh token as its password (real PostgreSQL; the token source is a fake credential)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from shared.storage.postgres.database import ENTRA_SCOPE, EntraTokenPassword, PostgresDatabase
from tests.backends import postgres_backend


@dataclass
class Token:
    token: str


class CountingCredential:
    """Implements the one method EntraTokenPassword uses, recording each scope asked for."""

    def __init__(self) -> None:
        self.scopes: list[str] = []

    async def get_token(self, scope: str) -> Token:
        self.scopes.append(scope)
        return Token(f"token-{len(self.scopes)}")


async def app_dsn(tmp_path) -> str:
    """A migrated database's app role (the app never migrates: a fresh one would be refused as behind)."""
    settings = await postgres_backend.provision(tmp_path)
    assert settings.postgres_dsn is not None
    return settings.postgres_dsn.reveal()


async def test_each_new_connection_signs_in_with_a_fresh_entra_token(tmp_path):
    credential = CountingCredential()
    db = PostgresDatabase(await app_dsn(tmp_path), max_size=2, password=EntraTokenPassword(credential))
    await db.open()
    try:
        entered = asyncio.Event()
        release = asyncio.Event()

        async def hold() -> str:
            async with db.transaction() as connection:
                entered.set()
                await release.wait()
                return str(connection.info.password)

        first = asyncio.create_task(hold())
        await entered.wait()
        async with db.transaction() as connection:  # the first is busy: the pool opens its second connection
            second = connection.info.password
        release.set()
        passwords = {await first, second}
        assert passwords == {"token-1", "token-2"}
        assert credential.scopes == [ENTRA_SCOPE, ENTRA_SCOPE]
        assert db.pool.max_size == 2
    finally:
        await db.close()


async def test_without_entra_the_dsn_is_used_as_given(tmp_path):
    db = PostgresDatabase(await app_dsn(tmp_path), max_size=3)
    await db.open()
    try:
        async with db.transaction() as connection:
            row = await (await connection.execute("SELECT current_user AS who")).fetchone()
        assert row["who"] == postgres_backend.APP and not connection.info.password and db.pool.max_size == 3
    finally:
        await db.close()
