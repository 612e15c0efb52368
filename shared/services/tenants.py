"""Tenants and how a request proves which tenant it is: API keys (stored as hashes) and webhook secrets."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from shared.connections.encryption import SecretBox
from shared.connections.secret import Secret
from shared.storage.models import ApiKey, Tenant
from shared.storage.ports import AlreadyExists, NotFound, TenantStore

TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
API_KEY = re.compile(r"^tf_(?P<key_id>[0-9a-f]{12})_(?P<secret>[A-Za-z0-9_-]{20,})$")


class TenantError(Exception):
    pass


@dataclass(frozen=True)
class NewTenant:
    tenant: Tenant
    api_key: Secret
    webhook_secret: Secret


def key_hash(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def webhook_aad(tenant_id: str) -> str:
    return f"{tenant_id}\x1fwebhook"


class TenantService:
    def __init__(self, store: TenantStore, box: SecretBox) -> None:
        self.store = store
        self.box = box

    async def add(self, tenant_id: str, name: str | None = None) -> NewTenant:
        if not TENANT_ID.match(tenant_id or ""):
            raise TenantError(f"tenant id {tenant_id!r} must be 2-63 characters: lowercase letters, digits and -, "
                              "starting with a letter or digit")
        webhook_secret = secrets.token_hex(32)
        tenant = Tenant(tenant_id, name or tenant_id, "active",
                        self.box.encrypt(webhook_secret.encode(), webhook_aad(tenant_id)))
        try:
            await self.store.add(tenant)
        except AlreadyExists:
            raise TenantError(f"tenant {tenant_id} already exists") from None
        _, api_key = await self.create_key(tenant_id)
        return NewTenant(tenant, api_key, Secret(webhook_secret))

    async def require(self, tenant_id: str) -> Tenant:
        tenant = await self.store.get(tenant_id)
        if tenant is None:
            raise TenantError(f"unknown tenant {tenant_id!r}")
        return tenant

    async def list(self) -> list[Tenant]:
        return await self.store.list()

    async def suspend(self, tenant_id: str) -> None:
        await self.set_status(tenant_id, "suspended")

    async def activate(self, tenant_id: str) -> None:
        await self.set_status(tenant_id, "active")

    async def set_status(self, tenant_id: str, status: str) -> None:
        try:
            await self.store.set_status(tenant_id, status)
        except NotFound:
            raise TenantError(f"unknown tenant {tenant_id!r}") from None

    async def create_key(self, tenant_id: str) -> tuple[str, Secret]:
        await self.require(tenant_id)
        key_id = secrets.token_hex(6)
        api_key = f"tf_{key_id}_{secrets.token_urlsafe(32)}"
        await self.store.add_api_key(ApiKey(key_id, tenant_id, key_hash(api_key)))
        return key_id, Secret(api_key)

    async def revoke_key(self, tenant_id: str, key_id: str) -> bool:
        return await self.store.revoke_api_key(tenant_id, key_id)

    async def authenticate(self, api_key: str) -> Tenant | None:
        """The tenant an API key belongs to, or None (unknown, malformed or revoked). Suspension is the
        caller's decision."""
        match = API_KEY.match(api_key.strip()) if isinstance(api_key, str) else None
        if match is None:
            return None
        stored = await self.store.get_api_key(match.group("key_id"))
        if stored is None or stored.revoked_at is not None:
            return None
        if not hmac.compare_digest(stored.key_hash, key_hash(api_key.strip())):
            return None
        return await self.store.get(stored.tenant_id)

    async def webhook_secret(self, tenant_id: str) -> Secret:
        tenant = await self.require(tenant_id)
        if tenant.webhook_secret_blob is None:
            return await self.rotate_webhook_secret(tenant_id)
        return Secret(self.box.decrypt(tenant.webhook_secret_blob, webhook_aad(tenant_id)).decode())

    async def rotate_webhook_secret(self, tenant_id: str) -> Secret:
        await self.require(tenant_id)
        value = secrets.token_hex(32)
        await self.store.set_webhook_secret(tenant_id, self.box.encrypt(value.encode(), webhook_aad(tenant_id)))
        return Secret(value)
