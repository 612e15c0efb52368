"""Contract: TenantStore and CredentialStore, on every backend."""

from __future__ import annotations

import uuid

import pytest

from shared.storage.models import ApiKey, StoredCredential, Tenant
from shared.storage.ports import AlreadyExists, NotFound


def tid(prefix="t"):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_tenants_add_get_list_status(stores):
    a, b = sorted([tid("a"), tid("b")])
    await stores.tenants.add(Tenant(b, "Bee"))
    await stores.tenants.add(Tenant(a, "Ay", webhook_secret_blob="v1.k.abc"))
    with pytest.raises(AlreadyExists):
        await stores.tenants.add(Tenant(a, "again"))
    got = await stores.tenants.get(a)
    assert (got.id, got.name, got.status, got.webhook_secret_blob) == (a, "Ay", "active", "v1.k.abc")
    assert got.created_at.tzinfo is not None
    assert [t.id for t in await stores.tenants.list() if t.id in (a, b)] == [a, b]
    await stores.tenants.set_status(a, "suspended")
    assert (await stores.tenants.get(a)).status == "suspended"
    await stores.tenants.set_webhook_secret(b, "v1.k.new")
    assert (await stores.tenants.get(b)).webhook_secret_blob == "v1.k.new"
    assert await stores.tenants.get("nope-" + a) is None
    with pytest.raises(NotFound):
        await stores.tenants.set_status("nope-" + a, "active")


async def test_api_keys_lookup_across_tenants_and_revoke(stores):
    a, b = tid(), tid()
    for t in (a, b):
        await stores.tenants.add(Tenant(t, t))
    key_a, key_b = uuid.uuid4().hex[:12], uuid.uuid4().hex[:12]
    await stores.tenants.add_api_key(ApiKey(key_a, a, "hash-a"))
    await stores.tenants.add_api_key(ApiKey(key_b, b, "hash-b"))
    with pytest.raises(AlreadyExists):
        await stores.tenants.add_api_key(ApiKey(key_a, b, "other"))
    found = await stores.tenants.get_api_key(key_b)
    assert (found.tenant_id, found.key_hash, found.revoked_at) == (b, "hash-b", None)
    assert [k.key_id for k in await stores.tenants.list_api_keys(a)] == [key_a]
    assert await stores.tenants.revoke_api_key(b, key_a) is False  # not b's key
    assert await stores.tenants.revoke_api_key(a, key_a) is True
    assert (await stores.tenants.get_api_key(key_a)).revoked_at is not None
    assert await stores.tenants.get_api_key("000000000000") is None


def credential(tenant, name="foundry", **over):
    fields = dict(tenant_id=tenant, name=name, kind="azure_openai", endpoint="https://x.openai.azure.com",
                  api_version="2024-10-21", auth="key", configs={"region": "eu"}, secret_blob="v1.k1.blob",
                  key_id="k1")
    fields.update(over)
    return StoredCredential(**fields)


async def test_credentials_put_versions_get_list_delete(stores):
    a, b = tid(), tid()
    first = await stores.credentials.put(credential(a))
    assert first.version == 1
    second = await stores.credentials.put(credential(a, secret_blob="v1.k1.other"))
    assert second.version == 2
    await stores.credentials.put(credential(a, "alpha"))
    await stores.credentials.put(credential(b))
    got = await stores.credentials.get(a, "foundry")
    assert (got.secret_blob, got.version, got.configs, got.endpoint) == ("v1.k1.other", 2, {"region": "eu"},
                                                                         "https://x.openai.azure.com")
    assert [c.name for c in await stores.credentials.list(a)] == ["alpha", "foundry"]
    assert {c.tenant_id for c in await stores.credentials.list(a)} == {a}
    assert await stores.credentials.get(b, "alpha") is None
    assert await stores.credentials.delete(a, "alpha") is True
    assert await stores.credentials.delete(a, "alpha") is False
    assert await stores.credentials.get(b, "foundry") is not None


async def test_rotation_listing_and_compare_and_swap(stores):
    a, b = tid(), tid()
    await stores.credentials.put(credential(a, key_id="old"))
    await stores.credentials.put(credential(b, key_id="old"))
    await stores.credentials.put(credential(b, "fresh", key_id="new"))
    await stores.credentials.put(credential(b, "keyless", secret_blob=None, key_id=None, auth="entra"))
    pending = [(c.tenant_id, c.name) for c in await stores.credentials.list_not_under_key("new", 100)
               if c.tenant_id in (a, b)]
    assert sorted(pending) == sorted([(a, "foundry"), (b, "foundry")])
    stale = await stores.credentials.get(a, "foundry")
    assert await stores.credentials.replace_secret(a, "foundry", stale.version, "v1.new.x", "new") is True
    assert await stores.credentials.replace_secret(a, "foundry", stale.version, "v1.new.y", "new") is False
    after = await stores.credentials.get(a, "foundry")
    assert (after.secret_blob, after.key_id, after.version) == ("v1.new.x", "new", stale.version + 1)
    assert await stores.credentials.replace_secret(a, "gone", 1, "v1.new.z", "new") is False
