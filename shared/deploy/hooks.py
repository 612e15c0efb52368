"""The azd hooks (infra/hooks/*.sh and *.ps1 call `python -m shared.deploy.hooks preprovision|postprovision`).

preprovision: makes the app's secrets ONCE and keeps them in the azd environment (infra/main.parameters.json
passes them to Bicep, which writes them to Key Vault). A value already in the azd environment is kept; a new azd
environment for an existing deployment reads them back from Key Vault; only then is a value generated. It also
records who runs azd (the PostgreSQL Entra administrator) and the machine's public IP (for the firewall).

postprovision: as that Entra administrator, creates the app identity's PostgreSQL login (pgaadauth), then runs
`tenantflow db migrate` as the owner, which grants the app login its rights. Both steps are idempotent.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

POSTGRES_SCOPE = "https://ossrdbms-aad.database.windows.net/.default"
MANAGEMENT_SCOPE = "https://management.azure.com/.default"
PUBLIC_IP_URL = "https://api.ipify.org"


class HookError(Exception):
    """A one-line reason the hook stopped; azd shows it and stops."""


@dataclass(frozen=True)
class GeneratedSecret:
    env_name: str  # in the azd environment
    vault_name: str  # in Key Vault (infra/main.bicep `secrets`)
    generate: Callable[[], str]


def encryption_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def operator_key() -> str:
    return secrets.token_hex(32)


def postgres_password() -> str:
    return "Tf" + secrets.token_hex(24)  # upper, lower and digits: Azure's complexity rule


SECRETS = (
    GeneratedSecret("TENANTFLOW_ENCRYPTION_KEY", "encryption-key", encryption_key),
    GeneratedSecret("TENANTFLOW_OPERATOR_KEY", "operator-key", operator_key),
    GeneratedSecret("POSTGRES_OWNER_PASSWORD", "postgres-owner-password", postgres_password),
)


class AzdEnvironment(Protocol):
    def values(self) -> dict[str, str]: ...

    def set(self, name: str, value: str) -> None: ...


class AzdCli:
    """The current azd environment, through the `azd` command."""

    def values(self) -> dict[str, str]:
        result = subprocess.run(["azd", "env", "get-values", "--output", "json"], capture_output=True, text=True)
        if result.returncode != 0:
            raise HookError(f"azd env get-values failed: {result.stderr.strip()}")
        return {str(k): str(v) for k, v in json.loads(result.stdout or "{}").items()}

    def set(self, name: str, value: str) -> None:
        result = subprocess.run(["azd", "env", "set", name, value], capture_output=True, text=True)
        if result.returncode != 0:
            raise HookError(f"azd env set {name} failed")  # the value stays out of the message


def key_vault_secret(vault: str, name: str) -> str | None:
    """A secret of an existing vault, through the Azure CLI; None when there is no CLI, vault or secret."""
    if not vault or shutil.which("az") is None:
        return None
    result = subprocess.run(["az", "keyvault", "secret", "show", "--vault-name", vault, "--name", name,
                             "--query", "value", "--output", "tsv"], capture_output=True, text=True)
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def check_encryption_key(value: str) -> None:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise HookError("TENANTFLOW_ENCRYPTION_KEY in the azd environment is not 32 bytes of base64; it is never "
                        "replaced automatically (stored credentials need it): fix or remove it")


def ensure_secrets(env: AzdEnvironment, vault_lookup: Callable[[str, str], str | None]) -> list[str]:
    """Fills each missing secret from Key Vault, else generates it. Returns one line per secret (no values)."""
    values = env.values()
    vault = values.get("AZURE_KEY_VAULT_NAME", "")
    report = []
    for secret in SECRETS:
        value = values.get(secret.env_name, "")
        source = "kept"
        if not value:
            value = vault_lookup(vault, secret.vault_name) or ""
            source = f"read from Key Vault {vault}"
            if not value:
                value, source = secret.generate(), "generated"
            env.set(secret.env_name, value)
        if secret.env_name == "TENANTFLOW_ENCRYPTION_KEY":
            check_encryption_key(value)
        report.append(f"{secret.env_name}: {source}")
    return report


def token_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def principal_settings(values: Mapping[str, str], claims: Mapping[str, Any]) -> dict[str, str]:
    """AZURE_PRINCIPAL_ID / _NAME / _TYPE of whoever azd signs in as, unless the environment already names them."""
    is_app = claims.get("idtyp") == "app"
    name = (claims.get("app_displayname") if is_app else
            claims.get("upn") or claims.get("unique_name") or claims.get("preferred_username"))
    found = {"AZURE_PRINCIPAL_ID": str(claims.get("oid") or ""), "AZURE_PRINCIPAL_NAME": str(name or ""),
             "AZURE_PRINCIPAL_TYPE": "ServicePrincipal" if is_app else "User"}
    return {key: value for key, value in found.items() if value and not values.get(key)}


def azd_token(scope: str) -> str:
    from azure.identity import AzureDeveloperCliCredential

    return AzureDeveloperCliCredential(process_timeout=60).get_token(scope).token


def public_ip() -> str:
    with urllib.request.urlopen(PUBLIC_IP_URL, timeout=10) as response:  # noqa: S310 (a fixed https URL)
        return response.read().decode().strip()


def preprovision(env: AzdEnvironment, vault_lookup: Callable[[str, str], str | None] = key_vault_secret,
                 token: Callable[[str], str] = azd_token,
                 lookup_ip: Callable[[], str] = public_ip) -> None:
    for line in ensure_secrets(env, vault_lookup):
        print(line)
    for name, value in principal_settings(env.values(), token_claims(token(MANAGEMENT_SCOPE))).items():
        env.set(name, value)
        print(f"{name}: {value}")
    if not env.values().get("AZURE_PRINCIPAL_NAME"):
        print("AZURE_PRINCIPAL_NAME: unknown (set it with `azd env set`): PostgreSQL gets no Entra administrator and "
              "postprovision cannot create the app's login")
    try:
        address = lookup_ip()
    except OSError as exc:
        print(f"AZURE_CLIENT_IP: not found ({exc}); postprovision reaches PostgreSQL only if the firewall admits it")
    else:
        env.set("AZURE_CLIENT_IP", address)
        print(f"AZURE_CLIENT_IP: {address} (admitted by the PostgreSQL firewall)")


def dsn(host: str, database: str, user: str, password: str | None = None) -> str:
    from psycopg.conninfo import make_conninfo

    extra = {"password": password} if password else {}
    return make_conninfo(host=host, port=5432, dbname=database, user=user, sslmode="require", **extra)


def create_app_login(values: Mapping[str, str], token: str) -> str:
    """The app identity's Entra login, made by the Entra administrator with pgaadauth (once)."""
    import psycopg

    role, object_id = values["POSTGRES_APP_ROLE"], values["POSTGRES_APP_PRINCIPAL_ID"]
    admin = dsn(values["POSTGRES_HOST"], "postgres", values["POSTGRES_ENTRA_ADMIN"], token)
    with psycopg.connect(admin, autocommit=True) as connection:
        if connection.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
            return f"PostgreSQL login {role}: exists"
        connection.execute("SELECT * FROM pgaadauth_create_principal_with_oid(%s, %s, 'service', false, false)",
                            (role, object_id))
    return f"PostgreSQL login {role}: created for the app's managed identity"


def migration_env(values: Mapping[str, str], base: Mapping[str, str]) -> dict[str, str]:
    """The environment of `tenantflow db migrate`: the owner's DSN (with its password) exists here only — never in
    the app's settings. TENANTFLOW_POSTGRES_DSN names the app login to grant (no password: it signs in with Entra)."""
    host, database = values["POSTGRES_HOST"], values.get("POSTGRES_DATABASE", "tenantflow")
    env = {name: value for name, value in base.items() if name != "TENANTFLOW_URL"}  # azd passes its outputs
    return {**env,
            "TENANTFLOW_STORE": "postgres",
            "TENANTFLOW_POSTGRES_ENTRA": "true",
            "TENANTFLOW_POSTGRES_DSN": dsn(host, database, values["POSTGRES_APP_ROLE"]),
            "TENANTFLOW_POSTGRES_MIGRATION_DSN": dsn(host, database, values.get("POSTGRES_OWNER", "tenantflow_owner"),
                                                     values["POSTGRES_OWNER_PASSWORD"]),
            "TENANTFLOW_ENCRYPTION_KEY": values["TENANTFLOW_ENCRYPTION_KEY"]}


def migrate(values: Mapping[str, str]) -> None:
    """`tenantflow db migrate` as the owner; it grants the app login (from TENANTFLOW_POSTGRES_DSN) its rights."""
    result = subprocess.run([sys.executable, "-m", "shared.cli", "db", "migrate"],
                            env=migration_env(values, os.environ))
    if result.returncode != 0:
        raise HookError(f"tenantflow db migrate failed (exit {result.returncode})")


def postprovision(env: AzdEnvironment, token: Callable[[str], str] = azd_token) -> None:
    values = env.values()
    missing = [name for name in ("POSTGRES_HOST", "POSTGRES_APP_ROLE", "POSTGRES_APP_PRINCIPAL_ID",
                                 "POSTGRES_OWNER_PASSWORD", "TENANTFLOW_ENCRYPTION_KEY")
               if not values.get(name)]
    if missing:
        raise HookError(f"the azd environment lacks {', '.join(missing)}: run `azd provision` again")
    if not values.get("POSTGRES_ENTRA_ADMIN"):
        raise HookError("PostgreSQL has no Entra administrator to create the app's login: `azd env set "
                        "AZURE_PRINCIPAL_NAME <your user principal name>`, then `azd provision`")
    print(create_app_login(values, token(POSTGRES_SCOPE)))
    migrate(values)
    print(f"Tenantflow is at {values.get('TENANTFLOW_URL', '?')}. Check it end to end once deployed: "
          "`tenantflow smoke --url $TENANTFLOW_URL --endpoint <model endpoint> --api-key-stdin` with "
          "TENANTFLOW_OPERATOR_KEY from `azd env get-value TENANTFLOW_OPERATOR_KEY`")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args not in (["preprovision"], ["postprovision"]):
        print("usage: python -m shared.deploy.hooks preprovision|postprovision", file=sys.stderr)
        return 2
    try:
        if args[0] == "preprovision":
            preprovision(AzdCli())
        else:
            postprovision(AzdCli())
    except HookError as exc:
        print(f"{args[0]}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
