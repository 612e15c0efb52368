"""Azure Table storage adapter of TenantMemberStore: table `members`, PartitionKey = tenant, RowKey = principal.
`tenants_of` filters on the principal property across partitions (memberships are few; a login is rare)."""

from __future__ import annotations

import builtins

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

from shared.storage.ports import TenantMemberStore
from shared.storage.table.client import TableClients, key


class TableTenantMemberStore(TenantMemberStore):
    def __init__(self, tables: TableClients) -> None:
        self.tables = tables

    async def add(self, tenant_id: str, principal: str) -> bool:
        try:
            await self.tables["members"].create_entity({"PartitionKey": key(tenant_id), "RowKey": key(principal),
                                                        "tenant_id": tenant_id, "principal": principal})
        except ResourceExistsError:
            return False
        return True

    async def remove(self, tenant_id: str, principal: str) -> bool:
        table = self.tables["members"]
        try:
            await table.get_entity(key(tenant_id), key(principal))
        except ResourceNotFoundError:
            return False
        await table.delete_entity(key(tenant_id), key(principal))
        return True

    async def list(self, tenant_id: str) -> builtins.list[str]:
        found = self.tables["members"].query_entities("PartitionKey eq @p", parameters={"p": key(tenant_id)})
        return sorted([entity["principal"] async for entity in found])

    async def tenants_of(self, principal: str) -> builtins.list[str]:
        found = self.tables["members"].query_entities("principal eq @p", parameters={"p": principal})
        return sorted([entity["tenant_id"] async for entity in found])
