"""Tenants and how a request proves which tenant it is: API keys (stored as hashes) and webhook secrets.

API key: `tf_<key id: 12 hex>_<secret: 32 random bytes, base64url>`. Only sha256(key) is stored, with the key id in
clear so a request finds its row in one lookup; the hash is compared in constant time. Webhook signing secret:
32 random bytes as hex, stored encrypted (associated data `<tenant>\\x1fwebhook`), shown to the operator on demand.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared.clock import Clock, SystemClock
from shared.connections.encryption import DecryptionError, SecretBox, webhook_aad
from shared.identifiers import TENANT_ID
from shared.secret import Secret
from shared.services.credentials import RotationReport
from shared.storage.models import ApiKey, Tenant
from shared.storage.ports import AlreadyExists, NotFound, ReplayGuard, TenantStore

KEY_ID = re.compile(r"^[0-9a-f]{12}\Z")
API_KEY = re.compile(r"^tf_(?P<key_id>[0-9a-f]{12})_(?P<secret>[A-Za-z0-9_-]{20,128})\Z")
MAX_API_KEY_LENGTH = 200
MAX_NAME_LENGTH = 200
KEY_ID_ATTEMPTS = 5
WEBHOOK_TOLERANCE = 300  # seconds a webhook signature's stamp may be away from now
API_KEY_CACHE_TTL = 5.0  # seconds an authenticated key is remembered: revoke/suspend reach other instances within it
API_KEY_CACHE_SIZE = 10_000


class TenantError(Exception):
    """A tenant operation cannot be done; one line, never a secret. `field`: what it concerns (id, name, tenant)."""

    def __init__(self, message: str, field: str = "tenant") -> None:
        super().__init__(message)
        self.field = field


class TenantNotFound(TenantError):
    """No tenant has that id."""


class TenantExists(TenantError):
    """A tenant with that id exists already."""


class WebhookRefused(Exception):
    """A webhook signature that does not prove the tenant: forged, stale, replayed, or for an unknown tenant."""


@dataclass(frozen=True)
class NewTenant:
    tenant: Tenant
    api_key: Secret
    webhook_secret: Secret
    key_id: str = ""  # the id of `api_key`


def key_hash(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def check_tenant_id(tenant_id: str) -> str:
    if not isinstance(tenant_id, str) or not TENANT_ID.match(tenant_id):
        shown = tenant_id if isinstance(tenant_id, str) and tenant_id.isprintable() else "…"
        raise TenantError(f"tenant id {shown[:80]!r} must be 2-63 characters: lowercase letters, digits and -, "
                          "starting with a letter or digit", "id")
    return tenant_id


class TenantService:
    def __init__(self, store: TenantStore, box: SecretBox, replay: ReplayGuard | None = None,
                 clock: Clock | None = None, key_cache_ttl: float = API_KEY_CACHE_TTL) -> None:
        self.store = store
        self.box = box
        self.replay = replay
        self.clock = clock or SystemClock()
        # sha256(key) → (monotonic expiry, key id, tenant): a hit skips two store reads per request. Revoking a key
        # or changing a tenant's status through this service drops its entries at once; another instance's change
        # is seen after at most API_KEY_CACHE_TTL. Unknown or wrong keys are never cached.
        self.key_cache: dict[str, tuple[float, str, Tenant]] = {}
        self.key_cache_ttl = key_cache_ttl

    async def add(self, tenant_id: str, name: str | None = None) -> NewTenant:
        check_tenant_id(tenant_id)
        name = tenant_id if name is None else name.strip()
        if not name or not name.isprintable() or len(name) > MAX_NAME_LENGTH:
            raise TenantError(f"tenant {tenant_id}: the name must be 1-{MAX_NAME_LENGTH} printable characters", "name")
        webhook_secret = secrets.token_hex(32)
        tenant = Tenant(tenant_id, name, "active", self.box.encrypt(webhook_secret.encode(), webhook_aad(tenant_id)))
        try:
            await self.store.add(tenant)
        except AlreadyExists:
            raise TenantExists(f"tenant {tenant_id} already exists", "id") from None
        key_id, api_key = await self.create_key(tenant_id)
        return NewTenant(tenant, api_key, Secret(webhook_secret), key_id)

    async def get(self, tenant_id: str) -> Tenant | None:
        return await self.store.get(tenant_id)

    async def require(self, tenant_id: str) -> Tenant:
        tenant = await self.store.get(tenant_id) if isinstance(tenant_id, str) else None
        if tenant is None:
            raise TenantNotFound(f"unknown tenant {tenant_id!r}")
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
            raise TenantNotFound(f"unknown tenant {tenant_id!r}") from None
        finally:
            self.forget(lambda key_id, tenant: tenant.id == tenant_id)

    def forget(self, matches: Callable[[str, Tenant], bool]) -> None:
        for digest in [d for d, (_, key_id, tenant) in self.key_cache.items() if matches(key_id, tenant)]:
            del self.key_cache[digest]

    # --- API keys ---------------------------------------------------------------------------------------------
    async def create_key(self, tenant_id: str) -> tuple[str, Secret]:
        """A new API key for the tenant: (key id, the key). The key is returned once; only its hash is kept."""
        await self.require(tenant_id)
        for _ in range(KEY_ID_ATTEMPTS):
            key_id = secrets.token_hex(6)
            api_key = f"tf_{key_id}_{secrets.token_urlsafe(32)}"
            try:
                await self.store.add_api_key(ApiKey(key_id, tenant_id, key_hash(api_key)))
            except AlreadyExists:  # 48-bit id collision: vanishingly rare, just draw again
                continue
            return key_id, Secret(api_key)
        raise TenantError(f"tenant {tenant_id}: could not allocate a unique key id")

    async def list_keys(self, tenant_id: str) -> builtins.list[ApiKey]:
        """The tenant's API keys (ids and state; the keys themselves are never stored)."""
        await self.require(tenant_id)
        return await self.store.list_api_keys(tenant_id)

    async def revoke_key(self, tenant_id: str, key_id: str) -> bool:
        """False when the tenant has no such key (another tenant's key id is "no such key", too)."""
        if not isinstance(key_id, str) or not KEY_ID.match(key_id):
            return False
        revoked = await self.store.revoke_api_key(tenant_id, key_id)
        self.forget(lambda cached_key_id, _: cached_key_id == key_id)  # after the write: nothing re-caches it
        return revoked

    async def authenticate(self, api_key: str) -> Tenant | None:
        """The tenant an API key belongs to, or None (malformed, unknown, wrong secret or revoked). Suspension is
        the caller's decision."""
        if not isinstance(api_key, str) or len(api_key) > MAX_API_KEY_LENGTH:
            return None
        api_key = api_key.strip()
        match = API_KEY.match(api_key)
        if match is None:
            return None
        digest = key_hash(api_key)
        cached = self.key_cache.get(digest)
        if cached is not None and cached[0] > time.monotonic():
            return cached[2]
        stored = await self.store.get_api_key(match.group("key_id"))
        if stored is None:
            hmac.compare_digest(digest, key_hash(""))  # same work whether or not the id exists
            return None
        if not hmac.compare_digest(stored.key_hash.encode(), digest.encode()):
            return None
        if stored.revoked_at is not None:
            return None
        tenant = await self.store.get(stored.tenant_id)
        if tenant is not None and self.key_cache_ttl > 0:
            if len(self.key_cache) >= API_KEY_CACHE_SIZE:
                self.key_cache.clear()
            self.key_cache[digest] = (time.monotonic() + self.key_cache_ttl, stored.key_id, tenant)
        return tenant

    # --- webhook signing secret -------------------------------------------------------------------------------
    async def verify_webhook(self, tenant_id: str, stamp: str, signature: str, body: bytes) -> Tenant:
        """The tenant whose secret signed `<stamp>.<body>` (HMAC-SHA256, hex; `stamp` in unix seconds), within
        ±WEBHOOK_TOLERANCE of now and used once. Raises WebhookRefused. Suspension is the caller's decision."""
        if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12) or not signature:
            raise WebhookRefused("missing or malformed x-tenantflow-signature (t=<unix seconds>,v1=<hex>)")
        if abs(self.clock.now().timestamp() - int(stamp)) > WEBHOOK_TOLERANCE:
            raise WebhookRefused(f"webhook signature timestamp is outside the ±{WEBHOOK_TOLERANCE} s window")
        tenant = await self.store.get(tenant_id)
        if tenant is None:
            raise WebhookRefused("invalid webhook signature")
        secret = await self.webhook_secret_of(tenant)
        expected = hmac.new(secret.reveal().encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature.lower()):
            raise WebhookRefused("invalid webhook signature")
        expires = datetime.fromtimestamp(int(stamp), UTC) + timedelta(seconds=WEBHOOK_TOLERANCE)
        if self.replay is not None and not await self.replay.first_use(tenant_id, signature.lower(), expires):
            raise WebhookRefused("webhook signature already used (replay)")
        return tenant

    async def webhook_secret(self, tenant_id: str) -> Secret:
        return await self.webhook_secret_of(await self.require(tenant_id))

    async def webhook_secret_of(self, tenant: Tenant) -> Secret:
        if tenant.webhook_secret_blob is None:
            return await self.rotate_webhook_secret(tenant.id)
        try:
            return Secret(self.box.decrypt(tenant.webhook_secret_blob, webhook_aad(tenant.id)).decode())
        except DecryptionError as exc:
            raise TenantError(f"tenant {tenant.id}: the webhook secret cannot be decrypted: {exc}") from None

    async def rotate_webhook_secret(self, tenant_id: str) -> Secret:
        await self.require(tenant_id)
        value = secrets.token_hex(32)
        try:
            await self.store.set_webhook_secret(tenant_id, self.box.encrypt(value.encode(), webhook_aad(tenant_id)))
        except NotFound:
            raise TenantError(f"unknown tenant {tenant_id!r}") from None
        return Secret(value)

    async def rotate_key(self, progress: Callable[[int, int | None], None] | None = None) -> RotationReport:
        """Re-encrypts every webhook secret not under the current encryption key (the credential rows are
        CredentialService.rotate_key's job). Safe to interrupt and run again."""
        rotated = 0
        unreadable: list[str] = []
        tenants = await self.store.list()
        for done, tenant in enumerate(tenants, 1):
            if progress is not None:
                progress(done, len(tenants))
            blob = tenant.webhook_secret_blob
            if blob is None:
                continue
            aad = webhook_aad(tenant.id)
            try:
                if self.box.key_id_of(blob) == self.box.current_kid:
                    continue
                plaintext = self.box.decrypt(blob, aad)
            except DecryptionError:
                unreadable.append(tenant.id)
                continue
            current = await self.store.get(tenant.id)  # skip a tenant whose secret was rotated meanwhile
            if current is None or current.webhook_secret_blob != blob:
                continue
            await self.store.set_webhook_secret(tenant.id, self.box.encrypt(plaintext, aad))
            rotated += 1
        return RotationReport(rotated, len(unreadable), tuple(unreadable))
