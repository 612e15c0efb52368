"""PostgreSQL adapter of TenantMemberStore (table tenant_members, migration 0005)."""

from __future__ import annotations

import builtins

from shared.storage.ports import TenantMemberStore
from shared.storage.postgres.database import PostgresDatabase


class PostgresTenantMemberStore(TenantMemberStore):
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def add(self, tenant_id: str, principal: str) -> bool:
        async with self.db.transaction(tenant_id) as c:
            cursor = await c.execute("INSERT INTO tenant_members (tenant_id, principal) VALUES (%s, %s) "
                                     "ON CONFLICT DO NOTHING", (tenant_id, principal))
            return cursor.rowcount == 1

    async def remove(self, tenant_id: str, principal: str) -> bool:
        async with self.db.transaction(tenant_id) as c:
            cursor = await c.execute("DELETE FROM tenant_members WHERE tenant_id = %s AND principal = %s",
                                     (tenant_id, principal))
            return cursor.rowcount == 1

    async def list(self, tenant_id: str) -> builtins.list[str]:
        async with self.db.transaction(tenant_id) as c:
            found = await (await c.execute("SELECT principal FROM tenant_members WHERE tenant_id = %s "
                                           "ORDER BY principal", (tenant_id,))).fetchall()
        return [row["principal"] for row in found]

    async def tenants_of(self, principal: str) -> builtins.list[str]:
        async with self.db.transaction() as c:
            found = await (await c.execute("SELECT tenant_id FROM tenantflow_member_tenants(%s)",
                                           (principal,))).fetchall()
        return [row["tenant_id"] for row in found]
