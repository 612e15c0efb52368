"""Per-tenant credentials: validated and encrypted on write, decrypted and re-checked on use, cached briefly.

Write (`set`): every rule is checked before anything is stored, and a refusal is one `CredentialError` line naming
tenant and credential. Secrets (the api_key and any custom secrets) are stored as one AES-GCM envelope of a JSON
object, bound to (tenant, name). A secret value may be a Key Vault reference; it is resolved at use.

Use (`load`, the engine's CredentialSource): the tenant must exist and be active, the endpoint is checked again by
the policy (the allowlist may have changed since the write), references are resolved, and the fields are cached
for `ttl` seconds under (tenant id, name) — so one tenant's entry can never answer another tenant's lookup.
The cache is per process: `set`/`delete`/`rotate_key` invalidate it here; other processes see a change within
`ttl` (TENANTFLOW_CREDENTIAL_CACHE_TTL; 0 turns caching off). Call `invalidate(tenant_id)` after suspending one.
"""

from __future__ import annotations

import builtins
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.connections.encryption import DecryptionError, SecretBox, credential_aad
from shared.connections.keyvault import (
    KeyVaultReferenceError,
    SecretResolver,
    looks_like_keyvault_reference,
    parse_keyvault_reference,
)
from shared.engine.ports import CredentialSource, EndpointPolicy, StepFailure
from shared.secret import MASK, Secret
from shared.storage.models import StoredCredential
from shared.storage.ports import CredentialStore, TenantStore

KINDS = ("azure_openai", "openai", "custom")
CREDENTIAL_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}\Z")
FIELD_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}\Z")  # configs / secrets keys: reachable as `cred.<key>` in flows
API_VERSION = re.compile(r"^[A-Za-z0-9._-]{1,40}\Z")
RESERVED_FIELDS = frozenset({"name", "kind", "endpoint", "api_version", "auth", "api_key", "version", "base_url",
                             "key_id", "updated_at", "tenant", "tenant_id"})
OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_API_VERSION = "2024-10-21"
MAX_CONFIG_VALUE = 4096
MAX_SECRET_VALUE = 16384
MAX_CACHE_ENTRIES = 10_000
ROTATION_CONFLICT_LIMIT = 3


class CredentialError(Exception):
    """A credential cannot be written; one line naming tenant and credential, never a secret. `field`: the field of
    the `credentials set` shape it concerns (name, kind, endpoint, api_version, auth, api_key, config.<k>,
    secrets.<k>, tenant)."""

    def __init__(self, message: str, field: str = "credential") -> None:
        super().__init__(message)
        self.field = field


def shown(text: Any) -> str:
    """A name as it may appear in a one-line message: as is when it is a plain short token, else repr'd."""
    if isinstance(text, str) and text.isprintable() and len(text) <= 80 and " " not in text:
        return text
    return repr(text[:80] if isinstance(text, str) else text)


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
    has_secret: bool
    secret_names: tuple[str, ...] = ()
    configs: dict[str, str] = field(default_factory=dict)
    readable: bool = True  # False when the envelope does not open under the keys this process holds

    def to_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant_id, "name": self.name, "kind": self.kind, "endpoint": self.endpoint,
            "api_version": self.api_version, "auth": self.auth,
            "api_key": MASK if "api_key" in self.secret_names or (self.has_secret and not self.readable) else None,
            "secrets": {n: MASK for n in self.secret_names if n != "api_key"}, "configs": dict(self.configs),
            "version": self.version, "key_id": self.key_id, "updated_at": self.updated_at.isoformat(),
            "has_secret": self.has_secret, "readable": self.readable,
        }


@dataclass(frozen=True)
class RotationReport:
    rotated: int  # re-encrypted under the current key by this call
    remaining: int  # still not under the current key (unreadable, or kept changing under us)
    unreadable: tuple[str, ...] = ()  # "tenant/name" of rows no key of this process opens


def view_of(stored: StoredCredential, secret_names: tuple[str, ...], readable: bool = True) -> CredentialView:
    return CredentialView(stored.tenant_id, stored.name, stored.kind, stored.endpoint, stored.api_version,
                          stored.auth, stored.version, stored.key_id, stored.updated_at,
                          stored.secret_blob is not None, secret_names, dict(stored.configs), readable)


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
        self.generation = 0  # bumped by every invalidation: a load that raced a write does not cache stale fields

    # --- writes -------------------------------------------------------------------------------------------------
    async def set(self, tenant_id: str, name: str, kind: str, *, endpoint: str | None = None,
                  api_version: str | None = None, api_key: Secret | None = None, entra: bool = False,
                  configs: dict[str, str] | None = None, secrets: dict[str, Secret] | None = None) -> CredentialView:
        where = f"tenant {shown(tenant_id)}: credential {shown(name)}"

        def fail(message: str, field: str) -> CredentialError:
            return CredentialError(f"{where}: {message}", field)

        if not isinstance(name, str) or not CREDENTIAL_NAME.match(name):
            raise fail("the name must be 1-63 lowercase letters, digits, _ or -, starting with a letter or digit",
                       "name")
        if kind not in KINDS:
            raise fail(f"unknown kind {shown(kind)}; expected one of {', '.join(KINDS)}", "kind")
        if not isinstance(tenant_id, str) or await self.tenants.get(tenant_id) is None:
            raise fail("unknown tenant", "tenant")
        if api_key is not None and not isinstance(api_key, Secret):
            raise fail("the API key must be passed as a Secret", "api_key")
        if entra and kind != "azure_openai":
            raise fail("Entra ID (keyless) auth is only for kind azure_openai", "auth")
        if kind == "azure_openai":
            if not endpoint:
                raise fail("an endpoint (--endpoint) is required for kind azure_openai", "endpoint")
            if entra and api_key is not None:
                raise fail("give an API key or --entra, not both", "api_key")
            if not entra and api_key is None:
                raise fail("an API key (--api-key-stdin) or --entra is required for kind azure_openai", "api_key")
        elif kind == "openai":
            if api_key is None:
                raise fail("an API key (--api-key-stdin) is required for kind openai", "api_key")
            endpoint = endpoint or OPENAI_BASE_URL
        if api_version is not None and not API_VERSION.match(api_version):
            raise fail(f"api_version {shown(api_version)} is not a version string such as {DEFAULT_API_VERSION}",
                       "api_version")

        plain_configs = self.checked_configs(configs or {}, fail)
        values = self.checked_secrets(secrets or {}, fail)
        overlap = sorted(set(values) & set(plain_configs))
        if overlap:
            raise fail(f"{overlap[0]!r} is both a config and a secret", f"config.{overlap[0]}")
        if api_key is not None:
            values["api_key"] = self.checked_secret_value("api_key", api_key, fail, "api_key")
        if endpoint:
            try:
                endpoint = self.policy.check(endpoint)
            except StepFailure as exc:
                raise fail(str(exc), "endpoint") from None

        blob = self.box.encrypt(json.dumps(values, sort_keys=True).encode(), credential_aad(tenant_id, name)) \
            if values else None
        stored = await self.store.put(StoredCredential(
            tenant_id=tenant_id, name=name, kind=kind, endpoint=endpoint or None,
            api_version=api_version or (DEFAULT_API_VERSION if kind == "azure_openai" else None),
            auth="entra" if entra else "key", configs=plain_configs, secret_blob=blob,
            key_id=self.box.current_kid if blob else None,
        ))
        self.invalidate_entry(tenant_id, name)
        return view_of(stored, tuple(sorted(values)))

    @staticmethod
    def checked_configs(configs: dict[str, str], fail: Callable[[str, str], CredentialError]) -> dict[str, str]:
        checked: dict[str, str] = {}
        for key, value in configs.items():
            field = f"config.{shown(key)}"
            if not isinstance(key, str) or not FIELD_NAME.match(key):
                raise fail(f"config {shown(key)}: names are lowercase letters, digits and _", field)
            if key in RESERVED_FIELDS:
                raise fail(f"config {key}: {key!r} is a reserved field name", field)
            if isinstance(value, Secret):
                raise fail(f"config {key}: a secret value belongs in secrets, not configs", field)
            if not isinstance(value, str) or len(value) > MAX_CONFIG_VALUE:
                raise fail(f"config {key}: the value must be text of at most {MAX_CONFIG_VALUE} characters", field)
            if looks_like_keyvault_reference(value):
                raise fail(f"config {key}: a Key Vault reference belongs in secrets (configs are not resolved)", field)
            checked[key] = value
        return checked

    def checked_secrets(self, secrets: dict[str, Secret],
                        fail: Callable[[str, str], CredentialError]) -> dict[str, str]:
        values: dict[str, str] = {}
        for key, value in secrets.items():
            field = f"secrets.{shown(key)}"
            if not isinstance(key, str) or not FIELD_NAME.match(key):
                raise fail(f"secret {shown(key)}: names are lowercase letters, digits and _", field)
            if key in RESERVED_FIELDS:
                raise fail(f"secret {key}: {key!r} is a reserved field name (pass an API key as api_key)", field)
            if not isinstance(value, Secret):
                raise fail(f"secret {key}: the value must be passed as a Secret", field)
            values[key] = self.checked_secret_value(key, value, fail, field)
        return values

    def checked_secret_value(self, key: str, value: Secret, fail: Callable[[str, str], CredentialError],
                             field: str) -> str:
        text = value.reveal().strip()
        if not text:
            raise fail(f"{key}: the value is empty", field)
        if len(text) > MAX_SECRET_VALUE:
            raise fail(f"{key}: the value is longer than {MAX_SECRET_VALUE} characters", field)
        if not text.isprintable():  # a newline in a key would end up in an HTTP header
            raise fail(f"{key}: the value contains control characters", field)
        if looks_like_keyvault_reference(text):
            try:
                parse_keyvault_reference(text)
            except KeyVaultReferenceError as exc:
                raise fail(f"{key}: {exc}", field) from None
            if self.resolver is None:
                raise fail(f"{key}: is a Key Vault reference, but no Key Vault resolver is configured", field)
        return text

    async def get(self, tenant_id: str, name: str) -> CredentialView | None:
        stored = await self.store.get(tenant_id, name)
        return None if stored is None else self.view(stored)

    async def list(self, tenant_id: str) -> builtins.list[CredentialView]:
        return [self.view(stored) for stored in await self.store.list(tenant_id)]

    def view(self, stored: StoredCredential) -> CredentialView:
        try:
            return view_of(stored, tuple(sorted(self.open_secrets(stored))))
        except StepFailure:
            return view_of(stored, (), readable=False)

    async def delete(self, tenant_id: str, name: str) -> bool:
        self.invalidate_entry(tenant_id, name)
        deleted = await self.store.delete(tenant_id, name)
        self.invalidate_entry(tenant_id, name)
        return deleted

    async def rotate_key(self, batch: int = 100,
                         progress: Callable[[int, int | None], None] | None = None) -> RotationReport:
        """Re-encrypts every secret not under the current key, `batch` rows per store query, each with a
        compare-and-swap on its version (a concurrent `set` wins; it already wrote under the current key).
        Safe to interrupt: a second call continues with whatever is still under an old key; old keys keep
        decrypting meanwhile. Rows no held key opens are left alone and reported."""
        if batch < 1:
            raise ValueError("batch must be at least 1")
        rotated = 0
        stuck: set[tuple[str, str]] = set()
        unreadable: list[str] = []
        conflicts: dict[tuple[str, str], int] = {}
        current = self.box.current_kid
        while True:
            rows = await self.store.list_not_under_key(current, batch + len(stuck))
            pending = [r for r in rows if (r.tenant_id, r.name) not in stuck][:batch]
            if not pending:
                break
            for stored in pending:
                key = (stored.tenant_id, stored.name)
                aad = credential_aad(*key)
                try:
                    plaintext = self.box.decrypt(stored.secret_blob or "", aad)
                except DecryptionError:
                    stuck.add(key)
                    unreadable.append(f"{stored.tenant_id}/{stored.name}")
                    continue
                swapped = await self.store.replace_secret(stored.tenant_id, stored.name, stored.version,
                                                          self.box.encrypt(plaintext, aad), current)
                self.invalidate_entry(*key)
                if swapped:
                    rotated += 1
                    if progress is not None:
                        progress(rotated, None)
                else:  # changed under us; the next listing shows whether it still needs rotating
                    conflicts[key] = conflicts.get(key, 0) + 1
                    if conflicts[key] >= ROTATION_CONFLICT_LIMIT:
                        stuck.add(key)
        return RotationReport(rotated, len(stuck), tuple(unreadable))

    # --- use at run time (the engine's CredentialSource) ---------------------------------------------------------
    async def load(self, tenant_id: str, name: str) -> dict[str, Any]:
        key = (tenant_id, name)
        entry = self.cache.get(key)
        if entry is not None and entry[0] > self.clock():
            return dict(entry[1])
        generation = self.generation
        fields = await self.read(tenant_id, name)
        if self.ttl > 0 and generation == self.generation:
            if len(self.cache) >= MAX_CACHE_ENTRIES:
                self.prune()
            self.cache[key] = (self.clock() + self.ttl, fields)
        return dict(fields)

    async def read(self, tenant_id: str, name: str) -> dict[str, Any]:
        tenant = await self.tenants.get(tenant_id) if isinstance(tenant_id, str) and tenant_id else None
        if tenant is None:
            raise StepFailure(f"unknown tenant {shown(tenant_id)}", "tenant_not_found")
        if tenant.status != "active":
            raise StepFailure(f"tenant {tenant_id} is suspended", "tenant_suspended")
        stored = None
        if isinstance(name, str) and CREDENTIAL_NAME.match(name):
            stored = await self.store.get(tenant_id, name)
        if stored is None or stored.tenant_id != tenant_id:
            raise StepFailure(f"tenant {tenant_id} has no credential {shown(name)}", "credential_not_found")
        where = f"tenant {tenant_id}: credential {name}"
        endpoint = stored.endpoint
        if endpoint:
            try:
                endpoint = self.policy.check(endpoint)
            except StepFailure as exc:
                raise StepFailure(f"{where}: {exc}", "endpoint_refused") from None
        fields: dict[str, Any] = {
            **stored.configs,
            "name": stored.name, "kind": stored.kind, "endpoint": endpoint,
            "api_version": stored.api_version or (DEFAULT_API_VERSION if stored.kind == "azure_openai" else None),
            "auth": stored.auth, "version": stored.version, "api_key": None,
        }
        if stored.kind == "openai":
            fields["base_url"] = endpoint
        for secret_name, value in self.open_secrets(stored).items():
            if secret_name in RESERVED_FIELDS and secret_name != "api_key":
                continue  # never let a stored secret shadow a structural field
            if looks_like_keyvault_reference(value):
                fields[secret_name] = await self.resolve(where, secret_name, value)
            else:
                fields[secret_name] = Secret(value)
        return fields

    def open_secrets(self, stored: StoredCredential) -> dict[str, str]:
        if not stored.secret_blob:
            return {}
        where = f"tenant {stored.tenant_id}: credential {stored.name}"
        try:
            plaintext = self.box.decrypt(stored.secret_blob, credential_aad(stored.tenant_id, stored.name))
            values = json.loads(plaintext)
        except DecryptionError as exc:
            raise StepFailure(f"{where}: cannot be decrypted: {exc}", "credential_unreadable") from None
        except ValueError:
            raise StepFailure(f"{where}: cannot be decrypted: the plaintext is not the expected JSON object",
                              "credential_unreadable") from None
        if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
            raise StepFailure(f"{where}: cannot be decrypted: the plaintext is not the expected JSON object",
                              "credential_unreadable")
        return values

    async def resolve(self, where: str, secret_name: str, reference: str) -> Secret:
        if self.resolver is None:
            raise StepFailure(f"{where}: {secret_name} is a Key Vault reference but no resolver is configured",
                              "credential_unreadable")
        try:
            secret = await self.resolver.resolve(reference)
        except LookupError as exc:
            raise StepFailure(f"{where}: {secret_name}: {exc}", "credential_unreadable") from None
        except Exception as exc:  # an SDK error's text may quote a response; name only its type
            raise StepFailure(f"{where}: {secret_name}: Key Vault lookup failed ({type(exc).__name__})",
                              "credential_unreadable") from None
        if not isinstance(secret, Secret) or not secret:
            raise StepFailure(f"{where}: {secret_name}: Key Vault returned no value", "credential_unreadable")
        return secret

    # --- cache ------------------------------------------------------------------------------------------------
    def invalidate_entry(self, tenant_id: str, name: str) -> None:
        self.generation += 1
        self.cache.pop((tenant_id, name), None)

    def invalidate(self, tenant_id: str | None = None) -> None:
        """Drops cached credentials: one tenant's (e.g. after suspending it), or all."""
        self.generation += 1
        if tenant_id is None:
            self.cache.clear()
        else:
            for key in [k for k in self.cache if k[0] == tenant_id]:
                self.cache.pop(key, None)

    def prune(self) -> None:
        now = self.clock()
        for key in [k for k, (expires, _) in self.cache.items() if expires <= now]:
            del self.cache[key]
        if len(self.cache) >= MAX_CACHE_ENTRIES:
            self.cache.clear()
