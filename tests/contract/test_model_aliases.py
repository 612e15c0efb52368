"""Contract: ModelAliasStore, on every backend."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from shared.storage.models import ModelAlias, Tenant

NOW = datetime(2026, 12, 3, 12, 30, 15, 123456, tzinfo=UTC)


def tid(prefix="t"):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_aliases_put_get_list_replace_remove_per_tenant(stores):
    a, b = tid("a"), tid("b")
    for tenant in (a, b):
        await stores.tenants.add(Tenant(tenant, tenant))
    chat = ModelAlias(a, "chat", "foundry", "prod-chat", None, NOW)
    await stores.aliases.put(chat)
    await stores.aliases.put(ModelAlias(a, "big/model#1", "foundry", "gpt-4o", "gpt-4o", NOW))
    await stores.aliases.put(ModelAlias(b, "chat", "other", "b-deployment", None, NOW))
    assert await stores.aliases.get(a, "chat") == chat
    assert await stores.aliases.get(b, "chat") == ModelAlias(b, "chat", "other", "b-deployment", None, NOW)
    assert await stores.aliases.get(a, "nope") is None
    assert [x.alias for x in await stores.aliases.list(a)] == ["big/model#1", "chat"]
    assert (await stores.aliases.list(a))[0].price_as == "gpt-4o"
    replaced = ModelAlias(a, "chat", "foundry2", "prod-chat-2", "gpt-4o-mini", NOW)
    await stores.aliases.put(replaced)
    assert await stores.aliases.get(a, "chat") == replaced
    assert len(await stores.aliases.list(a)) == 2
    assert await stores.aliases.remove(a, "chat") is True
    assert await stores.aliases.remove(a, "chat") is False
    assert await stores.aliases.get(a, "chat") is None
    assert await stores.aliases.get(b, "chat") is not None  # B's alias of the same name is untouched
    assert await stores.aliases.list(tid("none")) == []
