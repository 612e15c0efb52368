"""CredentialService over every storage backend: validation on write, isolation, encryption bound to the row,
Key Vault references, the cache, and key rotation."""

from __future__ import annotations

import dataclasses
import json
import os
import uuid

import pytest

from shared.connections.allowlist import EndpointAllowlist
from shared.connections.encryption import SecretBox
from shared.connections.keyvault import SecretResolutionError, SecretResolver
from shared.engine.ports import StepFailure
from shared.secret import EncryptionKey, Secret
from shared.services.credentials import CredentialError, CredentialService
from shared.storage.models import Tenant
from shared.storage.ports import CredentialStore

OLD = EncryptionKey("old", os.urandom(32))
NEW = EncryptionKey("new", os.urandom(32))
ENDPOINT = "https://acme-ai.openai.azure.com"
KEY = "acme-secret-key-0001"
KV_REF = "@Microsoft.KeyVault(VaultName=tf-vault;SecretName=acme-key)"


class FakeResolver(SecretResolver):
    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.resolved: list[str] = []

    async def resolve(self, reference: str) -> Secret:
        self.resolved.append(reference)
        if reference not in self.values:
            raise SecretResolutionError("Key Vault secret https://tf-vault.vault.azure.net/secrets/x is unavailable")
        return Secret(self.values[reference])


class CountingStore(CredentialStore):
    """Delegates to a real store; counts reads and can fail after N compare-and-swaps (an interrupted rotation)."""

    def __init__(self, inner: CredentialStore, fail_after_swaps: int | None = None) -> None:
        self.inner = inner
        self.gets = 0
        self.swaps = 0
        self.fail_after_swaps = fail_after_swaps

    async def put(self, credential):
        return await self.inner.put(credential)

    async def get(self, tenant_id, name):
        self.gets += 1
        return await self.inner.get(tenant_id, name)

    async def list(self, tenant_id):
        return await self.inner.list(tenant_id)

    async def delete(self, tenant_id, name):
        return await self.inner.delete(tenant_id, name)

    async def list_not_under_key(self, key_id, limit=100):
        return await self.inner.list_not_under_key(key_id, limit)

    async def replace_secret(self, tenant_id, name, expected_version, secret_blob, key_id):
        if self.fail_after_swaps is not None and self.swaps >= self.fail_after_swaps:
            raise ConnectionError("store went away")
        self.swaps += 1
        return await self.inner.replace_secret(tenant_id, name, expected_version, secret_blob, key_id)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def tid(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def service(stores, keys=(NEW,), store=None, extra_hosts=("127.0.0.1",), **options) -> CredentialService:
    return CredentialService(store or stores.credentials, stores.tenants, SecretBox(keys),
                             EndpointAllowlist(extra_hosts), **options)


async def new_tenant(stores, status: str = "active") -> str:
    tenant_id = tid()
    await stores.tenants.add(Tenant(tenant_id, tenant_id.upper(), status))
    return tenant_id


async def test_azure_openai_key_credential_round_trip(stores):
    tenant = await new_tenant(stores)
    credentials = service(stores)
    view = await credentials.set(tenant, "foundry", "azure_openai", endpoint=ENDPOINT + "/", api_key=Secret(KEY))
    assert (view.name, view.kind, view.endpoint, view.auth, view.version, view.key_id, view.has_secret) == \
        ("foundry", "azure_openai", ENDPOINT, "key", 1, "new", True)
    fields = await credentials.load(tenant, "foundry")
    assert fields["api_key"] == Secret(KEY) and isinstance(fields["api_key"], Secret)
    assert {k: v for k, v in fields.items() if k != "api_key"} == {
        "name": "foundry", "kind": "azure_openai", "endpoint": ENDPOINT, "api_version": "2024-10-21",
        "auth": "key", "version": 1}
    stored = await stores.credentials.get(tenant, "foundry")
    assert KEY not in json.dumps(dataclasses.asdict(stored), default=str)  # at rest: ciphertext only
    again = await credentials.set(tenant, "foundry", "azure_openai", endpoint=ENDPOINT, api_key=Secret(KEY + "x"))
    assert again.version == 2


async def test_entra_openai_and_custom_kinds(stores):
    tenant = await new_tenant(stores)
    credentials = service(stores)
    await credentials.set(tenant, "keyless", "azure_openai", endpoint=ENDPOINT, entra=True, api_version="2025-01-01")
    await credentials.set(tenant, "oai", "openai", api_key=Secret("sk-openai"))
    await credentials.set(tenant, "search", "custom", endpoint="https://s.cognitiveservices.azure.com",
                          configs={"index": "docs", "top_k": "5"}, secrets={"search_key": Secret("s3cr3t")})
    keyless = await credentials.load(tenant, "keyless")
    assert (keyless["auth"], keyless["api_key"], keyless["api_version"]) == ("entra", None, "2025-01-01")
    oai = await credentials.load(tenant, "oai")
    assert (oai["endpoint"], oai["base_url"], oai["api_key"]) == (
        "https://api.openai.com/v1", "https://api.openai.com/v1", Secret("sk-openai"))
    custom = await credentials.load(tenant, "search")
    assert (custom["index"], custom["top_k"], custom["search_key"], custom["api_key"]) == (
        "docs", "5", Secret("s3cr3t"), None)


async def test_list_shows_no_secret(stores):
    tenant = await new_tenant(stores)
    credentials = service(stores)
    await credentials.set(tenant, "foundry", "azure_openai", endpoint=ENDPOINT, api_key=Secret(KEY))
    await credentials.set(tenant, "keyless", "azure_openai", endpoint=ENDPOINT, entra=True)
    await credentials.set(tenant, "search", "custom", configs={"index": "docs"}, secrets={"token": Secret("tok-9")})
    rows = [view.to_dict() for view in await credentials.list(tenant)]
    assert [r["name"] for r in rows] == ["foundry", "keyless", "search"]
    assert [r["api_key"] for r in rows] == ["******", None, None]
    assert rows[2]["secrets"] == {"token": "******"} and rows[2]["configs"] == {"index": "docs"}
    assert [r["has_secret"] for r in rows] == [True, False, True]
    text = json.dumps(rows)
    assert KEY not in text and "tok-9" not in text
    assert await credentials.list(await new_tenant(stores)) == []


@pytest.mark.parametrize("arguments, message", [
    (dict(kind="azure_openai", api_key=Secret(KEY)), "an endpoint (--endpoint) is required"),
    (dict(kind="azure_openai", endpoint=ENDPOINT), "an API key (--api-key-stdin) or --entra is required"),
    (dict(kind="azure_openai", endpoint=ENDPOINT, api_key=Secret(KEY), entra=True), "not both"),
    (dict(kind="openai"), "an API key (--api-key-stdin) is required for kind openai"),
    (dict(kind="openai", api_key=Secret(KEY), entra=True), "only for kind azure_openai"),
    (dict(kind="bedrock", api_key=Secret(KEY)), "unknown kind bedrock; expected one of azure_openai, openai, custom"),
    (dict(kind="azure_openai", endpoint="https://evil.example.com", api_key=Secret(KEY)), "endpoint refused"),
    (dict(kind="azure_openai", endpoint="http://acme-ai.openai.azure.com", api_key=Secret(KEY)), "plain http"),
    (dict(kind="azure_openai", endpoint=ENDPOINT, api_key=Secret("   ")), "api_key: the value is empty"),
    (dict(kind="azure_openai", endpoint=ENDPOINT, api_key=Secret(KEY + "\r\nX-Evil: 1")), "control characters"),
    (dict(kind="azure_openai", endpoint=ENDPOINT, api_key=KEY), "must be passed as a Secret"),
    (dict(kind="azure_openai", endpoint=ENDPOINT, api_key=Secret(KEY), api_version="2024 10"), "api_version"),
    (dict(kind="azure_openai", endpoint=ENDPOINT, api_key=Secret(KV_REF)), "no Key Vault resolver is configured"),
    (dict(kind="azure_openai", endpoint=ENDPOINT, api_key=Secret("@Microsoft.KeyVault(VaultName=x;SecretName=k)")),
     "is not a vault name"),
    (dict(kind="custom", configs={"endpoint": "https://evil.example.com"}), "'endpoint' is a reserved field name"),
    (dict(kind="custom", configs={"Index": "x"}), "config Index: names are lowercase"),
    (dict(kind="custom", configs={"token": Secret("x")}), "belongs in secrets"),
    (dict(kind="custom", configs={"ref": KV_REF}), "a Key Vault reference belongs in secrets"),
    (dict(kind="custom", secrets={"api_version": Secret("x")}), "reserved field name"),
    (dict(kind="custom", secrets={"token": "plain"}), "secret token: the value must be passed as a Secret"),
    (dict(kind="custom", configs={"token": "a"}, secrets={"token": Secret("b")}), "both a config and a secret"),
])
async def test_invalid_writes_are_refused_in_one_line_and_write_nothing(stores, arguments, message):
    tenant = await new_tenant(stores)
    credentials = service(stores)
    with pytest.raises(CredentialError) as caught:
        await credentials.set(tenant, "foundry", **arguments)
    text = str(caught.value)
    assert text.startswith(f"tenant {tenant}: credential foundry: ")
    assert message in text
    assert "\n" not in text and KEY not in text
    assert await stores.credentials.list(tenant) == []


@pytest.mark.parametrize("name", ["Foundry", "-x", "a b", "x" * 64, "", "a/b", "line\nbreak"])
async def test_credential_names_are_slugs(stores, name):
    tenant = await new_tenant(stores)
    with pytest.raises(CredentialError, match="the name must be 1-63 lowercase letters") as caught:
        await service(stores).set(tenant, name, "openai", api_key=Secret(KEY))
    assert "\n" not in str(caught.value)


async def test_unknown_tenant_cannot_get_a_credential(stores):
    with pytest.raises(CredentialError, match="tenant ghost-1: credential foundry: unknown tenant"):
        await service(stores).set("ghost-1", "foundry", "openai", api_key=Secret(KEY))


async def test_load_failures_have_codes_and_name_tenant_and_credential(stores):
    credentials = service(stores)
    tenant = await new_tenant(stores)
    with pytest.raises(StepFailure) as caught:
        await credentials.load(tenant, "missing")
    assert (caught.value.code, str(caught.value)) == (
        "credential_not_found", f"tenant {tenant} has no credential missing")
    with pytest.raises(StepFailure) as caught:
        await credentials.load("ghost-2", "foundry")
    assert caught.value.code == "tenant_not_found"
    suspended = await new_tenant(stores, status="suspended")
    with pytest.raises(StepFailure) as caught:
        await credentials.load(suspended, "foundry")
    assert (caught.value.code, str(caught.value)) == ("tenant_suspended", f"tenant {suspended} is suspended")


async def test_tenants_never_see_each_others_credentials(stores):
    acme, globex = await new_tenant(stores), await new_tenant(stores)
    credentials = service(stores)
    await credentials.set(acme, "foundry", "azure_openai", endpoint=ENDPOINT, api_key=Secret("acme-key"))
    await credentials.set(globex, "foundry", "azure_openai", endpoint="https://globex.openai.azure.com",
                          api_key=Secret("globex-key"))
    await credentials.set(acme, "only-acme", "openai", api_key=Secret("acme-openai"))
    for _ in range(2):  # cold, then warm from the cache
        assert (await credentials.load(acme, "foundry"))["api_key"] == Secret("acme-key")
        assert (await credentials.load(globex, "foundry"))["api_key"] == Secret("globex-key")
        assert (await credentials.load(globex, "foundry"))["endpoint"] == "https://globex.openai.azure.com"
        with pytest.raises(StepFailure, match="has no credential only-acme") as caught:
            await credentials.load(globex, "only-acme")
        assert caught.value.code == "credential_not_found"


async def test_a_blob_copied_into_another_tenants_row_does_not_open(stores):
    acme, globex = await new_tenant(stores), await new_tenant(stores)
    credentials = service(stores)
    await credentials.set(acme, "foundry", "azure_openai", endpoint=ENDPOINT, api_key=Secret(KEY))
    await credentials.set(globex, "foundry", "azure_openai", endpoint=ENDPOINT, api_key=Secret("globex-key"))
    stolen = await stores.credentials.get(acme, "foundry")
    row = await stores.credentials.get(globex, "foundry")
    await stores.credentials.put(dataclasses.replace(row, secret_blob=stolen.secret_blob, key_id=stolen.key_id))
    credentials.invalidate()
    with pytest.raises(StepFailure) as caught:
        await credentials.load(globex, "foundry")
    assert caught.value.code == "credential_unreadable"
    assert str(caught.value).startswith(f"tenant {globex}: credential foundry: cannot be decrypted")
    assert KEY not in str(caught.value) and stolen.secret_blob not in str(caught.value)
    # Same tenant, other credential name: also refused.
    await stores.credentials.put(dataclasses.replace(stolen, name="copy"))
    with pytest.raises(StepFailure, match="cannot be decrypted"):
        await credentials.load(acme, "copy")
    views = {v.name: v for v in await credentials.list(acme)}
    assert views["copy"].readable is False and views["foundry"].readable is True


async def test_endpoint_is_checked_again_at_use(stores):
    tenant = await new_tenant(stores)
    await service(stores).set(tenant, "local", "azure_openai", endpoint="http://127.0.0.1:8765", api_key=Secret(KEY))
    stricter = service(stores, extra_hosts=())
    with pytest.raises(StepFailure) as caught:
        await stricter.load(tenant, "local")
    assert caught.value.code == "endpoint_refused"
    assert str(caught.value).startswith(f"tenant {tenant}: credential local: endpoint refused: http://127.0.0.1:8765")


async def test_key_vault_references_are_resolved_at_use(stores):
    tenant = await new_tenant(stores)
    resolver = FakeResolver({KV_REF: "kv-held-key"})
    credentials = service(stores, resolver=resolver)
    await credentials.set(tenant, "foundry", "azure_openai", endpoint=ENDPOINT, api_key=Secret(KV_REF))
    await credentials.set(tenant, "broken", "custom", secrets={"token": Secret(
        "https://tf-vault.vault.azure.net/secrets/gone")})
    assert resolver.resolved == []  # nothing is read from the vault on write
    assert (await credentials.load(tenant, "foundry"))["api_key"] == Secret("kv-held-key")
    assert (await credentials.load(tenant, "foundry"))["api_key"] == Secret("kv-held-key")
    assert resolver.resolved == [KV_REF]  # the second load came from the cache
    with pytest.raises(StepFailure) as caught:
        await credentials.load(tenant, "broken")
    assert caught.value.code == "credential_unreadable"
    assert str(caught.value) == (f"tenant {tenant}: credential broken: token: Key Vault secret "
                                 "https://tf-vault.vault.azure.net/secrets/x is unavailable")
    without = service(stores)
    with pytest.raises(StepFailure, match="api_key is a Key Vault reference but no resolver is configured"):
        await without.load(tenant, "foundry")


async def test_cache_serves_warm_loads_and_is_invalidated_by_writes(stores):
    tenant = await new_tenant(stores)
    counting = CountingStore(stores.credentials)
    clock = Clock()
    credentials = service(stores, store=counting, ttl=60, clock=clock)
    await credentials.set(tenant, "foundry", "azure_openai", endpoint=ENDPOINT, api_key=Secret("key-1"))
    assert (await credentials.load(tenant, "foundry"))["api_key"] == Secret("key-1")
    assert (await credentials.load(tenant, "foundry"))["api_key"] == Secret("key-1")
    assert counting.gets == 1
    loaded = await credentials.load(tenant, "foundry")
    loaded["endpoint"] = "https://evil.example.com"  # a caller's copy; the cache is unaffected
    assert (await credentials.load(tenant, "foundry"))["endpoint"] == ENDPOINT

    await credentials.set(tenant, "foundry", "azure_openai", endpoint=ENDPOINT, api_key=Secret("key-2"))
    assert (await credentials.load(tenant, "foundry"))["api_key"] == Secret("key-2")  # visible immediately
    assert counting.gets == 2

    # A write by another process (straight to the store) shows once the entry expires.
    other = service(stores)
    await other.set(tenant, "foundry", "azure_openai", endpoint=ENDPOINT, api_key=Secret("key-3"))
    assert (await credentials.load(tenant, "foundry"))["api_key"] == Secret("key-2")
    clock.now += 61
    assert (await credentials.load(tenant, "foundry"))["api_key"] == Secret("key-3")

    assert await credentials.delete(tenant, "foundry") is True
    with pytest.raises(StepFailure, match="has no credential foundry"):
        await credentials.load(tenant, "foundry")
    assert await credentials.delete(tenant, "foundry") is False


async def test_ttl_zero_turns_the_cache_off(stores):
    tenant = await new_tenant(stores)
    counting = CountingStore(stores.credentials)
    credentials = service(stores, store=counting, ttl=0)
    await credentials.set(tenant, "foundry", "openai", api_key=Secret(KEY))
    await credentials.load(tenant, "foundry")
    await credentials.load(tenant, "foundry")
    assert counting.gets == 2 and credentials.cache == {}


async def test_rotation_re_encrypts_under_the_current_key_and_resumes(stores):
    tenants = [await new_tenant(stores) for _ in range(3)]
    before = service(stores, keys=(OLD,))
    for tenant in tenants:
        for name in ("a", "b", "c"):
            await before.set(tenant, name, "openai", api_key=Secret(f"{tenant}-{name}"))
        await before.set(tenant, "keyless", "azure_openai", endpoint=ENDPOINT, entra=True)  # no secret to rotate
    stores_view = CountingStore(stores.credentials, fail_after_swaps=4)
    during = service(stores, keys=(NEW, OLD), store=stores_view)
    assert (await during.load(tenants[0], "a"))["api_key"] == Secret(f"{tenants[0]}-a")  # old key still opens

    with pytest.raises(ConnectionError):  # interrupted after 4 rows
        await during.rotate_key(batch=2)
    half = [c for c in await stores.credentials.list_not_under_key("new", 100)]
    assert len(half) == 5
    assert (await during.load(tenants[0], "a"))["api_key"] == Secret(f"{tenants[0]}-a")  # nothing lost meanwhile

    stores_view.fail_after_swaps = None
    report = await during.rotate_key(batch=2)
    assert (report.rotated, report.remaining, report.unreadable) == (5, 0, ())
    assert (await during.rotate_key()).rotated == 0  # nothing left

    after = service(stores, keys=(NEW,))  # the old key can now be removed
    for tenant in tenants:
        for name in ("a", "b", "c"):
            fields = await after.load(tenant, name)
            assert fields["api_key"] == Secret(f"{tenant}-{name}")
            assert fields["version"] >= 2
        assert {v.key_id for v in await after.list(tenant) if v.has_secret} == {"new"}


async def test_rotation_reports_rows_no_key_opens_and_leaves_them(stores):
    tenant = await new_tenant(stores)
    await service(stores, keys=(OLD,)).set(tenant, "fine", "openai", api_key=Secret(KEY))
    lost = EncryptionKey("lost", os.urandom(32))
    await service(stores, keys=(lost,)).set(tenant, "orphan", "openai", api_key=Secret(KEY))
    rotator = service(stores, keys=(NEW, OLD))
    report = await rotator.rotate_key(batch=1)
    assert (report.rotated, report.remaining, report.unreadable) == (1, 1, (f"{tenant}/orphan",))
    assert (await stores.credentials.get(tenant, "orphan")).key_id == "lost"


async def test_rotation_loses_to_a_concurrent_write(stores):
    tenant = await new_tenant(stores)
    await service(stores, keys=(OLD,)).set(tenant, "foundry", "openai", api_key=Secret("old-value"))
    stale = (await stores.credentials.list_not_under_key("new", 10))[0]
    writer = service(stores, keys=(NEW, OLD))
    await writer.set(tenant, "foundry", "openai", api_key=Secret("new-value"))
    assert not await stores.credentials.replace_secret(tenant, "foundry", stale.version, stale.secret_blob, "new")
    assert (await writer.load(tenant, "foundry"))["api_key"] == Secret("new-value")
    assert (await writer.rotate_key()).rotated == 0


def test_service_is_the_engine_credential_port():
    from shared.engine.ports import CredentialSource

    assert issubclass(CredentialService, CredentialSource)
