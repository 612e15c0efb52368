"""Key Vault references: which values are references, what they point at, and how malformed ones are named."""

from __future__ import annotations

import pytest

from shared.connections.keyvault import (
    KeyVaultReference,
    KeyVaultReferenceError,
    KeyVaultSecretResolver,
    SecretResolutionError,
    is_keyvault_reference,
    looks_like_keyvault_reference,
    parse_keyvault_reference,
)

VERSION = "0123456789abcdef0123456789abcdef"

REFERENCES = [
    ("@Microsoft.KeyVault(SecretUri=https://tf-vault.vault.azure.net/secrets/acme-key)",
     KeyVaultReference("tf-vault", "acme-key")),
    ("@Microsoft.KeyVault(SecretUri=https://tf-vault.vault.azure.net/secrets/acme-key/)",
     KeyVaultReference("tf-vault", "acme-key")),
    (f"@Microsoft.KeyVault(SecretUri=https://tf-vault.vault.azure.net/secrets/acme-key/{VERSION})",
     KeyVaultReference("tf-vault", "acme-key", VERSION)),
    ("@Microsoft.KeyVault(VaultName=tf-vault;SecretName=acme-key)", KeyVaultReference("tf-vault", "acme-key")),
    (f"@microsoft.keyvault(vaultname=TF-Vault; secretname=acme-key; secretversion={VERSION};)",
     KeyVaultReference("tf-vault", "acme-key", VERSION)),
    ("https://tf-vault.vault.azure.net/secrets/acme-key", KeyVaultReference("tf-vault", "acme-key")),
    (f"  https://TF-VAULT.vault.azure.net/secrets/acme-key/{VERSION}  ",
     KeyVaultReference("tf-vault", "acme-key", VERSION)),
    ("https://gov-vault.vault.usgovcloudapi.net/secrets/k1",
     KeyVaultReference("gov-vault", "k1", None, "vault.usgovcloudapi.net")),
]

MALFORMED = [
    ("@Microsoft.KeyVault(SecretUri=https://tf-vault.example.com/secrets/acme-key)", "SecretUri must be"),
    ("@Microsoft.KeyVault(SecretUri=http://tf-vault.vault.azure.net/secrets/acme-key)", "SecretUri must be"),
    ("@Microsoft.KeyVault(VaultName=tf-vault)", "needs SecretUri"),
    ("@Microsoft.KeyVault(VaultName=x;SecretName=acme-key)", "is not a vault name"),
    ("@Microsoft.KeyVault(VaultName=tf-vault;SecretName=acme_key)", "is not a secret name"),
    ("@Microsoft.KeyVault(VaultName=tf-vault;SecretName=k;SecretVersion=latest)", "is not a secret version"),
    ("@Microsoft.KeyVault(VaultName=tf-vault;SecretName=k;Color=blue)", "unknown field 'color'"),
    ("@Microsoft.KeyVault(VaultName=tf-vault;SecretName=k", "missing closing parenthesis"),
    ("@Microsoft.KeyVault(tf-vault/k)", "is not Key=Value"),
    ("https://tf-vault.vault.azure.net/secrets/acme-key/v1/extra", "SecretUri must be"),
    ("https://tf-vault.vault.azure.net/secrets/acme-key?api-version=7.4", "is not a secret name"),
]

NOT_REFERENCES = ["sk-live-123", "", "https://contoso.openai.azure.com", "https://tf-vault.vault.azure.net/keys/k",
                  "KeyVault(SecretUri=https://tf-vault.vault.azure.net/secrets/k)", None, 42]


@pytest.mark.parametrize("value, expected", REFERENCES, ids=[v.strip()[:70] for v, _ in REFERENCES])
def test_references_in_every_form(value, expected):
    assert is_keyvault_reference(value)
    assert looks_like_keyvault_reference(value)
    assert parse_keyvault_reference(value) == expected


@pytest.mark.parametrize("value, message", MALFORMED, ids=[v[:70] for v, _ in MALFORMED])
def test_malformed_references_look_like_one_but_are_refused(value, message):
    assert looks_like_keyvault_reference(value)  # so they are never used as a literal key
    assert not is_keyvault_reference(value)
    with pytest.raises(KeyVaultReferenceError, match=message):
        parse_keyvault_reference(value)


@pytest.mark.parametrize("value", NOT_REFERENCES)
def test_other_values_are_not_references(value):
    assert not looks_like_keyvault_reference(value)
    assert not is_keyvault_reference(value)


def test_reference_renders_as_its_uri():
    parsed = parse_keyvault_reference(f"@Microsoft.KeyVault(VaultName=tf-vault;SecretName=k;SecretVersion={VERSION})")
    assert parsed.vault_url == "https://tf-vault.vault.azure.net"
    assert str(parsed) == f"https://tf-vault.vault.azure.net/secrets/k/{VERSION}"


async def test_resolver_refuses_vaults_outside_its_list_before_any_sdk_call():
    resolver = KeyVaultSecretResolver(credential=object(), allowed_vaults=("tf-vault",))
    with pytest.raises(SecretResolutionError, match="Key Vault other-vault is not listed in TENANTFLOW_ALLOWED_KEY"):
        await resolver.resolve("https://other-vault.vault.azure.net/secrets/k")
    with pytest.raises(SecretResolutionError, match="Key Vault tf-vault2 is not listed"):  # no prefix match
        await resolver.resolve("https://tf-vault2.vault.azure.net/secrets/k")
    with pytest.raises(SecretResolutionError, match="is not a vault name"):
        await resolver.resolve("@Microsoft.KeyVault(VaultName=x;SecretName=k)")
    assert resolver.clients == {}


async def test_no_vault_resolves_unless_listed():
    unlisted = KeyVaultSecretResolver(credential=object())
    with pytest.raises(SecretResolutionError, match="tf-vault is not listed in TENANTFLOW_ALLOWED_KEY_VAULTS"):
        await unlisted.resolve("https://tf-vault.vault.azure.net/secrets/k")
    by_host = KeyVaultSecretResolver(credential=object(), allowed_vaults=("tf-vault.vault.azure.cn",))
    assert by_host.allows(parse_keyvault_reference("https://tf-vault.vault.azure.cn/secrets/k"))
    assert not by_host.allows(parse_keyvault_reference("https://tf-vault.vault.azure.net/secrets/k"))
    assert unlisted.clients == {} and by_host.clients == {}
