"""Per-tenant credentials: validated and encrypted on write, decrypted and re-checked on use, cached briefly.

Every lookup is keyed by the tenant id of the run context; the cache key includes it, so one tenant's entry can
never answer another tenant's lookup.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.connections.encryption import DecryptionError, SecretBox, credential_aad
from shared.connections.keyvault import SecretResolver, is_keyvault_reference
from shared.connections.secret import MASK, Secret
from shared.engine.ports import CredentialSource, EndpointPolicy, StepFailure
from shared.storage.models import StoredCredential
from shared.storage.ports import CredentialStore, TenantStore

KINDS = ("azure_openai", "openai", "custom")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_API_VERSION = "2024-10-21"


class CredentialError(Exception):
    """A credential cannot be written; one line naming tenant and credential, never a secret."""


@dataclass(frozen=True)
class CredentialView:
    """What may be shown of a credential: everything but secret values."""

    tenant_id: str
    name: str
    kind: str
    endpoint: str | None
    api_version: str | None
    auth: str
    version: int
    key_id: str | None
    updated_at: datetime
    secret_names: tuple[str, ...]
    configs: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant_id, "name": self.name, "kind": self.kind, "endpoint": self.endpoint,
            "api_version": self.api_version, "auth": self.auth, "version": self.version, "key_id": self.key_id,
            "updated_at": self.updated_at.isoformat(), "configs": self.configs,
            **{name: MASK for name in self.secret_names},
        }


@dataclass(frozen=True)
class RotationReport:
    rotated: int
    remaining: int


def view_of(stored: StoredCredential, secret_names: tuple[str, ...]) -> CredentialView:
    return CredentialView(stored.tenant_id, stored.name, stored.kind, stored.endpoint, stored.api_version,
                          stored.auth, stored.version, stored.key_id, stored.updated_at, secret_names,
                          dict(stored.configs))


class CredentialService(CredentialSource):
    def __init__(self, store: CredentialStore, tenants: TenantStore, box: SecretBox, policy: EndpointPolicy,
                 resolver: SecretResolver | None = None, ttl: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.tenants = tenants
        self.box = box
        self.policy = policy
        self.resolver = resolver
        self.ttl = ttl
        self.clock = clock
        self.cache: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}

    # --- writes -------------------------------------------------------------------------------------------------
    async def set(self, tenant_id: str, name: str, kind: str, *, endpoint: str | None = None,
                  api_version: str | None = None, api_key: Secret | None = None, entra: bool = False,
                  configs: dict[str, str] | None = None, secrets: dict[str, Secret] | None = None) -> CredentialView:
        where = f"tenant {tenant_id}: credential {name}"
        if await self.tenants.get(tenant_id) is None:
            raise CredentialError(f"{where}: unknown tenant")
        if not NAME.match(name or ""):
            raise CredentialError(f"{where}: name must be letters, digits, _ and - (up to 63)")
        if kind not in KINDS:
            raise CredentialError(f"{where}: unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
        values: dict[str, str] = {name_: s.reveal() for name_, s in (secrets or {}).items()}
        auth = "key"
        if kind == "azure_openai":
            if not endpoint:
                raise CredentialError(f"{where}: --endpoint is required for kind azure_openai")
            if entra and api_key is not None:
                raise CredentialError(f"{where}: give an API key or --entra, not both")
            if not entra and api_key is None:
                raise CredentialError(f"{where}: an API key (--api-key-stdin) or --entra is required")
            auth = "entra" if entra else "key"
        elif kind == "openai":
            if api_key is None:
                raise CredentialError(f"{where}: an API key (--api-key-stdin) is required for kind openai")
            endpoint = endpoint or OPENAI_BASE_URL
        if api_key is not None:
            if not api_key.reveal().strip():
                raise CredentialError(f"{where}: the API key is empty")
            values["api_key"] = api_key.reveal().strip()
        if endpoint:
            try:
                endpoint = self.policy.check(endpoint)
            except StepFailure as exc:
                raise CredentialError(f"{where}: {exc}") from None
        blob = self.box.encrypt(json.dumps(values).encode(), credential_aad(tenant_id, name)) if values else None
        stored = await self.store.put(StoredCredential(
            tenant_id=tenant_id, name=name, kind=kind, endpoint=endpoint,
            api_version=api_version or (DEFAULT_API_VERSION if kind == "azure_openai" else None), auth=auth,
            configs=dict(configs or {}), secret_blob=blob, key_id=self.box.current_kid if blob else None,
        ))
        self.cache.pop((tenant_id, name), None)
        return view_of(stored, tuple(sorted(values)))

    async def list(self, tenant_id: str) -> list[CredentialView]:
        views = []
        for stored in await self.store.list(tenant_id):
            try:
                names = tuple(sorted(self.open_secrets(stored)))
            except StepFailure:
                names = ("api_key",) if stored.secret_blob else ()
            views.append(view_of(stored, names))
        return views

    async def delete(self, tenant_id: str, name: str) -> bool:
        self.cache.pop((tenant_id, name), None)
        return await self.store.delete(tenant_id, name)

    async def rotate_key(self, batch: int = 100) -> RotationReport:
        """Re-encrypts every secret not under the current key. Safe to interrupt and run again."""
        rotated = 0
        skipped: set[tuple[str, str, int]] = set()
        while True:
            pending = [c for c in await self.store.list_not_under_key(self.box.current_kid, batch + len(skipped))
                       if (c.tenant_id, c.name, c.version) not in skipped]
            if not pending:
                break
            for stored in pending[:batch]:
                aad = credential_aad(stored.tenant_id, stored.name)
                try:
                    plaintext = self.box.decrypt(stored.secret_blob or "", aad)
                except DecryptionError:
                    skipped.add((stored.tenant_id, stored.name, stored.version))  # unreadable: reported, kept
                    continue
                if await self.store.replace_secret(stored.tenant_id, stored.name, stored.version,
                                                   self.box.encrypt(plaintext, aad), self.box.current_kid):
                    rotated += 1
                self.cache.pop((stored.tenant_id, stored.name), None)
        return RotationReport(rotated, len(skipped))

    # --- use at run time (the engine's CredentialSource) ---------------------------------------------------------
    async def load(self, tenant_id: str, name: str) -> dict[str, Any]:
        key = (tenant_id, name)
        cached = self.cache.get(key)
        if cached is not None and cached[0] > self.clock():
            return dict(cached[1])
        tenant = await self.tenants.get(tenant_id)
        if tenant is None:
            raise StepFailure(f"unknown tenant {tenant_id!r}", "tenant_not_found")
        if tenant.status != "active":
            raise StepFailure(f"tenant {tenant_id} is suspended", "tenant_suspended")
        stored = await self.store.get(tenant_id, name)
        if stored is None:
            raise StepFailure(f"tenant {tenant_id} has no credential {name!r}", "credential_not_found")
        fields: dict[str, Any] = {"name": stored.name, "kind": stored.kind, "endpoint": stored.endpoint,
                                  "api_version": stored.api_version or DEFAULT_API_VERSION, "auth": stored.auth,
                                  "version": stored.version, "api_key": None, **stored.configs}
        if stored.kind == "openai":
            fields["base_url"] = stored.endpoint
        for secret_name, value in self.open_secrets(stored).items():
            if is_keyvault_reference(value):
                value = await self.resolve(tenant_id, name, value)
            fields[secret_name] = Secret(value)
        if stored.endpoint:
            fields["endpoint"] = self.policy.check(stored.endpoint)
        self.cache[key] = (self.clock() + self.ttl, fields)
        return dict(fields)

    def open_secrets(self, stored: StoredCredential) -> dict[str, str]:
        if not stored.secret_blob:
            return {}
        try:
            plaintext = self.box.decrypt(stored.secret_blob, credential_aad(stored.tenant_id, stored.name))
        except DecryptionError as exc:
            raise StepFailure(f"tenant {stored.tenant_id}: credential {stored.name} cannot be decrypted: {exc}",
                              "credential_unreadable") from None
        return json.loads(plaintext)

    async def resolve(self, tenant_id: str, name: str, reference: str) -> str:
        if self.resolver is None:
            raise StepFailure(f"tenant {tenant_id}: credential {name} holds a Key Vault reference but no resolver "
                              "is configured", "credential_unreadable")
        try:
            return (await self.resolver.resolve(reference)).reveal()
        except LookupError as exc:
            raise StepFailure(f"tenant {tenant_id}: credential {name}: {exc}", "credential_unreadable") from None

    def invalidate(self, tenant_id: str | None = None) -> None:
        if tenant_id is None:
            self.cache.clear()
        else:
            for key in [k for k in self.cache if k[0] == tenant_id]:
                self.cache.pop(key, None)
