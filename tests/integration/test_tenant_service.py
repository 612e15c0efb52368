"""TenantService over every storage backend: tenant ids, API keys (hashed, constant-time checked, revocable) and
webhook signing secrets (encrypted, bound to their tenant)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import uuid

import pytest

from shared.connections.encryption import SecretBox, key_id_of
from shared.secret import EncryptionKey
from shared.services.tenants import TenantError, TenantService

OLD = EncryptionKey("old", os.urandom(32))
NEW = EncryptionKey("new", os.urandom(32))
API_KEY = re.compile(r"^tf_([0-9a-f]{12})_[A-Za-z0-9_-]{43}$")


def tid(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def service(stores, keys=(NEW,)) -> TenantService:
    return TenantService(stores.tenants, SecretBox(keys))


async def test_add_creates_an_active_tenant_a_key_and_a_webhook_secret(stores):
    tenants = service(stores)
    tenant_id = tid("acme")
    created = await tenants.add(tenant_id, "Acme Corp")
    assert (created.tenant.id, created.tenant.name, created.tenant.status) == (tenant_id, "Acme Corp", "active")
    match = API_KEY.match(created.api_key.reveal())
    assert match, "API key format tf_<12 hex>_<43 base64url>"
    stored_key = await stores.tenants.get_api_key(match.group(1))
    assert stored_key.tenant_id == tenant_id
    assert stored_key.key_hash == hashlib.sha256(created.api_key.reveal().encode()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", created.webhook_secret.reveal())
    stored = await stores.tenants.get(tenant_id)
    at_rest = json.dumps([dataclasses.asdict(stored), dataclasses.asdict(stored_key)], default=str)
    assert created.api_key.reveal() not in at_rest and created.webhook_secret.reveal() not in at_rest
    assert key_id_of(stored.webhook_secret_blob) == "new"
    assert str(created.api_key) == "******"
    assert (await tenants.add(tid("plain"))).tenant.name.startswith("plain-")  # name defaults to the id


@pytest.mark.parametrize("tenant_id", ["A-corp", "a", "-acme", "acme_corp", "acme corp", "x" * 64, "", "ümlaut"])
async def test_tenant_ids_are_slugs(stores, tenant_id):
    with pytest.raises(TenantError, match="must be 2-63 characters: lowercase letters, digits and -"):
        await service(stores).add(tenant_id)


async def test_duplicates_and_unknown_tenants_are_clear_errors(stores):
    tenants = service(stores)
    tenant_id = tid()
    await tenants.add(tenant_id)
    with pytest.raises(TenantError, match=f"tenant {tenant_id} already exists"):
        await tenants.add(tenant_id)
    with pytest.raises(TenantError, match="unknown tenant 'ghost-9'"):
        await tenants.suspend("ghost-9")
    with pytest.raises(TenantError, match="unknown tenant 'ghost-9'"):
        await tenants.create_key("ghost-9")
    with pytest.raises(TenantError, match="unknown tenant 'ghost-9'"):
        await tenants.webhook_secret("ghost-9")
    with pytest.raises(TenantError, match="the name must be"):
        await tenants.add(tid(), "two\nlines")


async def test_list_suspend_activate(stores):
    tenants = service(stores)
    a, b = sorted([tid("a"), tid("b")])
    await tenants.add(b)
    await tenants.add(a)
    assert [t.id for t in await tenants.list() if t.id in (a, b)] == [a, b]
    await tenants.suspend(a)
    assert (await stores.tenants.get(a)).status == "suspended"
    await tenants.activate(a)
    assert (await stores.tenants.get(a)).status == "active"


async def test_authenticate_finds_the_tenant_and_ignores_suspension(stores):
    tenants = service(stores)
    created = await tenants.add(tid())
    key = created.api_key.reveal()
    assert (await tenants.authenticate(key)).id == created.tenant.id
    assert (await tenants.authenticate(f"  {key}\n")).id == created.tenant.id
    await tenants.suspend(created.tenant.id)
    found = await tenants.authenticate(key)
    assert (found.id, found.status) == (created.tenant.id, "suspended")  # the caller decides what suspension means


async def test_authenticate_refuses_wrong_malformed_and_unknown_keys(stores):
    tenants = service(stores)
    created = await tenants.add(tid())
    key = created.api_key.reveal()
    key_id = key.split("_")[1]
    wrong_secret = f"tf_{key_id}_{'A' * 43}"
    unknown_id = f"tf_{'0' * 12}_{key.split('_', 2)[2]}"
    for candidate in (wrong_secret, unknown_id, key[:-1], key + "x", "", "tf__", key.upper(), "x" * 500, None, 7):
        assert await tenants.authenticate(candidate) is None, candidate


async def test_keys_can_be_added_and_revoked_per_tenant(stores):
    tenants = service(stores)
    acme, globex = await tenants.add(tid("acme")), await tenants.add(tid("globex"))
    key_id, second = await tenants.create_key(acme.tenant.id)
    assert API_KEY.match(second.reveal()) and second.reveal().split("_")[1] == key_id
    assert (await tenants.authenticate(second.reveal())).id == acme.tenant.id
    assert await tenants.revoke_key(globex.tenant.id, key_id) is False  # not globex's key
    assert await tenants.revoke_key(acme.tenant.id, key_id) is True
    assert await tenants.authenticate(second.reveal()) is None
    assert (await tenants.authenticate(acme.api_key.reveal())).id == acme.tenant.id  # the first key still works
    assert (await tenants.authenticate(globex.api_key.reveal())).id == globex.tenant.id
    assert await tenants.revoke_key(acme.tenant.id, "not-a-key-id") is False


async def test_webhook_secret_is_readable_rotatable_and_bound_to_its_tenant(stores):
    tenants = service(stores)
    acme, globex = await tenants.add(tid("acme")), await tenants.add(tid("globex"))
    assert await tenants.webhook_secret(acme.tenant.id) == acme.webhook_secret
    rotated = await tenants.rotate_webhook_secret(acme.tenant.id)
    assert rotated != acme.webhook_secret and re.fullmatch(r"[0-9a-f]{64}", rotated.reveal())
    assert await tenants.webhook_secret(acme.tenant.id) == rotated
    # acme's blob copied into globex's row does not open as globex's secret.
    blob = (await stores.tenants.get(acme.tenant.id)).webhook_secret_blob
    await stores.tenants.set_webhook_secret(globex.tenant.id, blob)
    with pytest.raises(TenantError, match=f"tenant {globex.tenant.id}: the webhook secret cannot be decrypted") as e:
        await tenants.webhook_secret(globex.tenant.id)
    assert rotated.reveal() not in str(e.value)


async def test_webhook_secrets_follow_key_rotation(stores):
    before = service(stores, keys=(OLD,))
    created = [await before.add(tid()) for _ in range(3)]
    after = service(stores, keys=(NEW, OLD))
    report = await after.rotate_key()
    assert (report.rotated, report.remaining) == (3, 0)
    assert (await after.rotate_key()).rotated == 0
    only_new = service(stores, keys=(NEW,))
    for new in created:
        assert await only_new.webhook_secret(new.tenant.id) == new.webhook_secret
        assert key_id_of((await stores.tenants.get(new.tenant.id)).webhook_secret_blob) == "new"
