"""Contract: TenantMemberStore, on every backend."""

from __future__ import annotations

import uuid

from shared.storage.models import Tenant


def tid(prefix="m"):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_members_add_remove_list_and_lookup_by_principal(stores):
    a, b = sorted([tid("a"), tid("b")])
    for tenant in (a, b):
        await stores.tenants.add(Tenant(tenant, tenant))
    ann, bob = f"ann-{a}@contoso.com", f"0f1e2d3c-{b}"
    assert await stores.members.add(a, ann) is True
    assert await stores.members.add(a, ann) is False  # already a member
    assert await stores.members.add(a, bob) and await stores.members.add(b, bob)
    assert await stores.members.list(a) == sorted([ann, bob]) and await stores.members.list(b) == [bob]
    assert await stores.members.tenants_of(bob) == [a, b] and await stores.members.tenants_of(ann) == [a]
    assert await stores.members.tenants_of("nobody@" + a) == []
    assert await stores.members.remove(a, bob) is True and await stores.members.remove(a, bob) is False
    assert await stores.members.tenants_of(bob) == [b] and await stores.members.list(a) == [ann]
    odd = f"user/with#odd?chars%{a}"  # Table storage keys may not hold / \\ # ? %
    assert await stores.members.add(b, odd) and await stores.members.tenants_of(odd) == [b]
    assert await stores.members.remove(b, odd) and await stores.members.list(b) == [bob]
