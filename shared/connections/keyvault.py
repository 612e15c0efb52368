"""Key Vault references as secret values, resolved at use time through a small port.

Recognised: `@Microsoft.KeyVault(SecretUri=https://<vault>.vault.azure.net/secrets/<name>[/<version>])`,
`@Microsoft.KeyVault(VaultName=<vault>;SecretName=<name>[;SecretVersion=<v>])`, and a bare secret URI.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from shared.connections.secret import Secret

SECRET_URI = re.compile(r"^https://(?P<vault>[a-z0-9-]{3,24})\.vault\.azure\.net/secrets/(?P<name>[A-Za-z0-9-]{1,127})"
                        r"(?:/(?P<version>[A-Za-z0-9]{32}))?/?$", re.IGNORECASE)
APP_SETTING_REFERENCE = re.compile(r"^@Microsoft\.KeyVault\((?P<body>.*)\)$", re.IGNORECASE)


@dataclass(frozen=True)
class KeyVaultReference:
    vault: str
    name: str
    version: str | None = None

    @property
    def vault_url(self) -> str:
        return f"https://{self.vault}.vault.azure.net"


def parse_keyvault_reference(value: str) -> KeyVaultReference | None:
    text = value.strip()
    wrapped = APP_SETTING_REFERENCE.match(text)
    if wrapped:
        fields = dict(part.split("=", 1) for part in wrapped.group("body").split(";") if "=" in part)
        fields = {k.strip().lower(): v.strip() for k, v in fields.items()}
        if "secreturi" in fields:
            text = fields["secreturi"]
        elif "vaultname" in fields and "secretname" in fields:
            return KeyVaultReference(fields["vaultname"].lower(), fields["secretname"], fields.get("secretversion"))
        else:
            return None
    match = SECRET_URI.match(text)
    if not match:
        return None
    return KeyVaultReference(match.group("vault").lower(), match.group("name"), match.group("version"))


def is_keyvault_reference(value: Any) -> bool:
    return isinstance(value, str) and parse_keyvault_reference(value) is not None


class SecretResolver(ABC):
    @abstractmethod
    async def resolve(self, reference: str) -> Secret:
        """The secret a Key Vault reference points at. Raises LookupError with a message naming no secret."""


class KeyVaultSecretResolver(SecretResolver):
    """Reads secrets with the app's managed identity (DefaultAzureCredential). One client per vault."""

    def __init__(self) -> None:
        self.clients: dict[str, Any] = {}
        self.credential: Any = None

    async def resolve(self, reference: str) -> Secret:
        parsed = parse_keyvault_reference(reference)
        if parsed is None:
            raise LookupError("not a Key Vault reference")
        from azure.core.exceptions import AzureError
        from azure.identity.aio import DefaultAzureCredential
        from azure.keyvault.secrets.aio import SecretClient

        if self.credential is None:
            self.credential = DefaultAzureCredential()
        client = self.clients.get(parsed.vault_url)
        if client is None:
            client = self.clients[parsed.vault_url] = SecretClient(parsed.vault_url, self.credential)
        try:
            secret = await client.get_secret(parsed.name, parsed.version)
        except AzureError as exc:
            raise LookupError(f"Key Vault secret {parsed.name} in {parsed.vault} unavailable: "
                              f"{type(exc).__name__}") from None
        return Secret(secret.value or "")

    async def close(self) -> None:
        for client in self.clients.values():
            await client.close()
        if self.credential is not None:
            await self.credential.close()
