"""Azure Table storage adapter of ModelAliasStore: table `aliases`, PartitionKey = tenant, RowKey = alias."""

from __future__ import annotations

import builtins
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.storage.models import ModelAlias
from shared.storage.ports import ModelAliasStore
from shared.storage.serialization import parse_required_time, time_text
from shared.storage.table.client import TableClients, key


def alias_of(entity: Any) -> ModelAlias:
    return ModelAlias(entity["tenant_id"], entity["alias"], entity["credential"], entity["deployment"],
                      entity.get("price_as") or None, parse_required_time(entity["updated_at"]))


class TableModelAliasStore(ModelAliasStore):
    def __init__(self, tables: TableClients) -> None:
        self.tables = tables

    async def put(self, alias: ModelAlias) -> None:
        await self.tables["aliases"].upsert_entity({
            "PartitionKey": key(alias.tenant_id), "RowKey": key(alias.alias), "tenant_id": alias.tenant_id,
            "alias": alias.alias, "credential": alias.credential, "deployment": alias.deployment,
            "price_as": alias.price_as or "", "updated_at": time_text(alias.updated_at)}, mode=UpdateMode.REPLACE)

    async def get(self, tenant_id: str, alias: str) -> ModelAlias | None:
        try:
            entity = await self.tables["aliases"].get_entity(key(tenant_id), key(alias))
        except ResourceNotFoundError:
            return None
        return alias_of(entity)

    async def list(self, tenant_id: str) -> builtins.list[ModelAlias]:
        found = self.tables["aliases"].query_entities("PartitionKey eq @p", parameters={"p": key(tenant_id)})
        return sorted([alias_of(entity) async for entity in found], key=lambda a: a.alias)

    async def remove(self, tenant_id: str, alias: str) -> bool:
        table = self.tables["aliases"]
        try:
            await table.get_entity(key(tenant_id), key(alias))
        except ResourceNotFoundError:
            return False
        await table.delete_entity(key(tenant_id), key(alias))
        return True
