"""PostgreSQL adapter of ModelAliasStore (table model_aliases, migration 0008)."""

from __future__ import annotations

import builtins
from typing import Any

from shared.storage.models import ModelAlias
from shared.storage.ports import ModelAliasStore
from shared.storage.postgres.database import PostgresDatabase


def alias_of(row: Any) -> ModelAlias:
    return ModelAlias(row["tenant_id"], row["alias"], row["credential"], row["deployment"], row["price_as"],
                      row["updated_at"])


class PostgresModelAliasStore(ModelAliasStore):
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def put(self, alias: ModelAlias) -> None:
        async with self.db.transaction(alias.tenant_id) as c:
            await c.execute(
                "INSERT INTO model_aliases VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (tenant_id, alias) DO UPDATE "
                "SET credential = EXCLUDED.credential, deployment = EXCLUDED.deployment, "
                "price_as = EXCLUDED.price_as, updated_at = EXCLUDED.updated_at",
                (alias.tenant_id, alias.alias, alias.credential, alias.deployment, alias.price_as, alias.updated_at))

    async def get(self, tenant_id: str, alias: str) -> ModelAlias | None:
        async with self.db.transaction(tenant_id) as c:
            row = await (await c.execute("SELECT * FROM model_aliases WHERE tenant_id = %s AND alias = %s",
                                         (tenant_id, alias))).fetchone()
        return alias_of(row) if row else None

    async def list(self, tenant_id: str) -> builtins.list[ModelAlias]:
        async with self.db.transaction(tenant_id) as c:
            found = await (await c.execute("SELECT * FROM model_aliases WHERE tenant_id = %s ORDER BY alias",
                                           (tenant_id,))).fetchall()
        return [alias_of(row) for row in found]

    async def remove(self, tenant_id: str, alias: str) -> bool:
        async with self.db.transaction(tenant_id) as c:
            cursor = await c.execute("DELETE FROM model_aliases WHERE tenant_id = %s AND alias = %s",
                                     (tenant_id, alias))
            return cursor.rowcount == 1
