"""SQLite adapter of ModelAliasStore (table model_aliases, migration 0005)."""

from __future__ import annotations

import builtins
import sqlite3

from shared.storage.models import ModelAlias
from shared.storage.ports import ModelAliasStore
from shared.storage.serialization import parse_required_time, time_text
from shared.storage.sqlite.database import SqliteDatabase

COLUMNS = "tenant_id, alias, credential, deployment, price_as, updated_at"


def alias_of(row: sqlite3.Row | tuple) -> ModelAlias:
    return ModelAlias(row[0], row[1], row[2], row[3], row[4], parse_required_time(row[5]))


class SqliteModelAliasStore(ModelAliasStore):
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def put(self, alias: ModelAlias) -> None:
        await self.db.run(lambda c: c.execute(
            f"INSERT OR REPLACE INTO model_aliases ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            (alias.tenant_id, alias.alias, alias.credential, alias.deployment, alias.price_as,
             time_text(alias.updated_at))))

    async def get(self, tenant_id: str, alias: str) -> ModelAlias | None:
        row = await self.db.run(lambda c: c.execute(
            f"SELECT {COLUMNS} FROM model_aliases WHERE tenant_id = ? AND alias = ?", (tenant_id, alias)).fetchone())
        return alias_of(row) if row else None

    async def list(self, tenant_id: str) -> builtins.list[ModelAlias]:
        found = await self.db.run(lambda c: c.execute(
            f"SELECT {COLUMNS} FROM model_aliases WHERE tenant_id = ? ORDER BY alias", (tenant_id,)).fetchall())
        return [alias_of(row) for row in found]

    async def remove(self, tenant_id: str, alias: str) -> bool:
        return await self.db.run(lambda c: c.execute(
            "DELETE FROM model_aliases WHERE tenant_id = ? AND alias = ?", (tenant_id, alias)).rowcount == 1)
