"""Tenant members: the principals App Service Authentication may present to see a tenant's dashboard
(`tenantflow tenants members add|remove|list T PRINCIPAL`). A principal is an Entra object id or a user name
(UPN / email), compared without regard to case."""

from __future__ import annotations

import builtins

from shared.services.dashboard_access import ClientPrincipal
from shared.services.tenants import TenantError
from shared.storage.ports import TenantMemberStore, TenantStore

MAX_PRINCIPAL_LENGTH = 256


def normal_principal(principal: str) -> str:
    text = principal.strip().lower() if isinstance(principal, str) else ""
    if not text or len(text) > MAX_PRINCIPAL_LENGTH or not text.isprintable():
        raise TenantError(f"principal must be 1-{MAX_PRINCIPAL_LENGTH} printable characters (an object id or a "
                          "user name)")
    return text


class TenantMembers:
    def __init__(self, tenants: TenantStore, members: TenantMemberStore) -> None:
        self.tenants = tenants
        self.members = members

    async def require_tenant(self, tenant_id: str) -> None:
        if await self.tenants.get(tenant_id) is None:
            raise TenantError(f"unknown tenant {tenant_id!r}")

    async def add(self, tenant_id: str, principal: str) -> bool:
        await self.require_tenant(tenant_id)
        return await self.members.add(tenant_id, normal_principal(principal))

    async def remove(self, tenant_id: str, principal: str) -> bool:
        await self.require_tenant(tenant_id)
        return await self.members.remove(tenant_id, normal_principal(principal))

    async def list(self, tenant_id: str) -> builtins.list[str]:
        await self.require_tenant(tenant_id)
        return await self.members.list(tenant_id)

    async def tenants_for(self, principal: ClientPrincipal) -> builtins.list[str]:
        """The tenants whose dashboards an Easy Auth principal may see (by object id or user name), sorted. An
        operator (app role Tenantflow.Operator) sees every tenant: the caller checks `principal.operator` first."""
        found: set[str] = set()
        for name in principal.ids:
            found.update(await self.members.tenants_of(normal_principal(name)))
        return sorted(found)
