"""Key Vault references as secret values, resolved at use time through a small port.

A stored secret (a credential's api_key or a custom secret) may be, instead of the value itself, a reference:
  `@Microsoft.KeyVault(SecretUri=https://<vault>.vault.azure.net/secrets/<name>[/<version>])`
  `@Microsoft.KeyVault(VaultName=<vault>;SecretName=<name>[;SecretVersion=<version>])`
  `https://<vault>.vault.azure.net/secrets/<name>[/<version>]`
(the App Service reference syntax; sovereign-cloud vault suffixes are accepted too). The app's identity reads it
when the credential is loaded; the reference itself names no secret value, so messages may show it.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from shared.secret import Secret

VAULT_SUFFIXES = ("vault.azure.net", "vault.azure.cn", "vault.usgovcloudapi.net", "vault.microsoftazure.de")
VAULT_NAME = re.compile(r"^[a-z][a-z0-9-]{1,22}[a-z0-9]$", re.IGNORECASE)
SECRET_NAME = re.compile(r"^[A-Za-z0-9-]{1,127}$")
SECRET_VERSION = re.compile(r"^[A-Za-z0-9]{32}$")
SECRET_URI = re.compile(
    r"^https://(?P<vault>[^./]+)\.(?P<suffix>" + "|".join(re.escape(s) for s in VAULT_SUFFIXES) + r")(?::443)?"
    r"/secrets/(?P<name>[^/]+)(?:/(?P<version>[^/]*))?/?$", re.IGNORECASE)
WRAPPER = re.compile(r"^@Microsoft\.KeyVault\((?P<body>.*)\)$", re.IGNORECASE | re.DOTALL)
URI_PREFIX = re.compile(r"^https://[^/]+\.(" + "|".join(re.escape(s) for s in VAULT_SUFFIXES) + r")(:443)?/secrets/",
                        re.IGNORECASE)


class KeyVaultReferenceError(ValueError):
    """A value looks like a Key Vault reference but is malformed (the message says which part)."""


class SecretResolutionError(LookupError):
    """A Key Vault reference could not be resolved. The message names the vault and secret, never a value."""


@dataclass(frozen=True)
class KeyVaultReference:
    vault: str
    name: str
    version: str | None = None
    suffix: str = "vault.azure.net"

    @property
    def vault_url(self) -> str:
        return f"https://{self.vault}.{self.suffix}"

    def __str__(self) -> str:
        return f"{self.vault_url}/secrets/{self.name}" + (f"/{self.version}" if self.version else "")


def looks_like_keyvault_reference(value: Any) -> bool:
    """True for anything written as a reference, well-formed or not (so a typo is not used as a literal key)."""
    if not isinstance(value, str):
        return False
    text = value.strip()
    return text.lower().startswith("@microsoft.keyvault(") or bool(URI_PREFIX.match(text))


def reference(vault: str, name: str, version: str | None, suffix: str = "vault.azure.net") -> KeyVaultReference:
    if not VAULT_NAME.match(vault) or "--" in vault:
        raise KeyVaultReferenceError(f"Key Vault reference: {vault!r} is not a vault name (3-24 letters, digits, -)")
    if not SECRET_NAME.match(name):
        raise KeyVaultReferenceError(f"Key Vault reference: {name!r} is not a secret name (1-127 letters, digits, -)")
    if version is not None and not SECRET_VERSION.match(version):
        raise KeyVaultReferenceError(f"Key Vault reference: {version!r} is not a secret version (32 characters)")
    return KeyVaultReference(vault.lower(), name, version or None, suffix.lower())


def parse_uri(text: str) -> KeyVaultReference:
    match = SECRET_URI.match(text.strip())
    if not match:
        raise KeyVaultReferenceError("Key Vault reference: SecretUri must be "
                                     "https://<vault>.vault.azure.net/secrets/<name>[/<version>]")
    return reference(match["vault"], match["name"], match["version"] or None, match["suffix"])


def parse_keyvault_reference(value: str) -> KeyVaultReference:
    """Parses any of the three forms; KeyVaultReferenceError (naming the bad part) when it is not one."""
    if not isinstance(value, str):
        raise KeyVaultReferenceError("Key Vault reference: not a string")
    text = value.strip()
    wrapped = WRAPPER.match(text)
    if wrapped is None:
        if text.lower().startswith("@microsoft.keyvault("):
            raise KeyVaultReferenceError("Key Vault reference: missing closing parenthesis")
        return parse_uri(text)
    fields: dict[str, str] = {}
    for part in wrapped["body"].split(";"):
        if not part.strip():
            continue
        key, eq, val = part.partition("=")
        if not eq:
            raise KeyVaultReferenceError(f"Key Vault reference: {part.strip()!r} is not Key=Value")
        fields[key.strip().lower()] = val.strip()
    if "secreturi" in fields:
        if set(fields) != {"secreturi"}:
            raise KeyVaultReferenceError("Key Vault reference: SecretUri cannot be combined with other fields")
        return parse_uri(fields["secreturi"])
    unknown = set(fields) - {"vaultname", "secretname", "secretversion"}
    if unknown:
        raise KeyVaultReferenceError(f"Key Vault reference: unknown field {sorted(unknown)[0]!r}")
    if "vaultname" not in fields or "secretname" not in fields:
        raise KeyVaultReferenceError("Key Vault reference: needs SecretUri=… or VaultName=…;SecretName=…")
    return reference(fields["vaultname"], fields["secretname"], fields.get("secretversion") or None)


def is_keyvault_reference(value: Any) -> bool:
    """True for a well-formed reference in any of the three forms."""
    if not looks_like_keyvault_reference(value):
        return False
    try:
        parse_keyvault_reference(value)
    except KeyVaultReferenceError:
        return False
    return True


class SecretResolver(ABC):
    @abstractmethod
    async def resolve(self, reference: str) -> Secret:
        """The secret a Key Vault reference points at. Raises SecretResolutionError (a LookupError) with a
        message naming the reference, never a secret value."""


class KeyVaultSecretResolver(SecretResolver):
    """Reads secrets with the app's identity (DefaultAzureCredential, i.e. the managed identity on Azure); one
    SecretClient per vault. Only vaults named in `allowed_vaults` (TENANTFLOW_ALLOWED_KEY_VAULTS: a vault name, or
    its host `<vault>.vault.azure.net`) are read — none when it is empty: a credential written for one tenant must
    not be able to name a vault that holds other tenants' (or the app's) secrets."""

    def __init__(self, credential: Any = None, allowed_vaults: tuple[str, ...] = ()) -> None:
        self.credential = credential
        self.owns_credential = credential is None
        self.allowed_vaults = {v.strip().lower() for v in allowed_vaults if v.strip()}
        self.clients: dict[str, Any] = {}

    def allows(self, parsed: KeyVaultReference) -> bool:
        return parsed.vault in self.allowed_vaults or f"{parsed.vault}.{parsed.suffix}" in self.allowed_vaults

    async def resolve(self, reference: str) -> Secret:
        try:
            parsed = parse_keyvault_reference(reference)
        except KeyVaultReferenceError as exc:
            raise SecretResolutionError(str(exc)) from None
        if not self.allows(parsed):
            raise SecretResolutionError(f"Key Vault {parsed.vault} is not listed in TENANTFLOW_ALLOWED_KEY_VAULTS; "
                                        "the app reads no other vault")
        from azure.core.exceptions import AzureError
        from azure.keyvault.secrets.aio import SecretClient

        if self.credential is None:
            from azure.identity.aio import DefaultAzureCredential

            self.credential = DefaultAzureCredential()
        client = self.clients.get(parsed.vault_url)
        if client is None:
            client = self.clients[parsed.vault_url] = SecretClient(parsed.vault_url, self.credential)
        try:
            secret = await client.get_secret(parsed.name, parsed.version)
        except AzureError as exc:
            raise SecretResolutionError(f"Key Vault secret {parsed} is unavailable ({type(exc).__name__})") from None
        if not secret.value:
            raise SecretResolutionError(f"Key Vault secret {parsed} is empty")
        return Secret(secret.value)

    async def close(self) -> None:
        for client in self.clients.values():
            await client.close()
        self.clients.clear()
        if self.owns_credential and self.credential is not None:
            await self.credential.close()
            self.credential = None
