"""SQLite adapter of TenantMemberStore (table tenant_members, migration 0003)."""

from __future__ import annotations

import builtins
import sqlite3
from datetime import UTC, datetime

from shared.storage.ports import TenantMemberStore
from shared.storage.serialization import time_text
from shared.storage.sqlite.database import SqliteDatabase


class SqliteTenantMemberStore(TenantMemberStore):
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def add(self, tenant_id: str, principal: str) -> bool:
        def insert(c: sqlite3.Connection) -> bool:
            return c.execute("INSERT OR IGNORE INTO tenant_members VALUES (?, ?, ?)",
                             (tenant_id, principal, time_text(datetime.now(UTC)))).rowcount == 1

        return await self.db.run(insert)

    async def remove(self, tenant_id: str, principal: str) -> bool:
        return await self.db.run(lambda c: c.execute(
            "DELETE FROM tenant_members WHERE tenant_id = ? AND principal = ?", (tenant_id, principal)).rowcount == 1)

    async def list(self, tenant_id: str) -> builtins.list[str]:
        found = await self.db.run(lambda c: c.execute(
            "SELECT principal FROM tenant_members WHERE tenant_id = ? ORDER BY principal", (tenant_id,)).fetchall())
        return [row[0] for row in found]

    async def tenants_of(self, principal: str) -> builtins.list[str]:
        found = await self.db.run(lambda c: c.execute(
            "SELECT tenant_id FROM tenant_members WHERE principal = ? ORDER BY tenant_id", (principal,)).fetchall())
        return [row[0] for row in found]
