"""The azd hooks' decisions: secrets are made once and never replaced; a new azd environment for an existing
deployment gets them back from Key Vault; the Entra administrator comes from the signed-in principal."""

from __future__ import annotations

import base64
import json
import os
import re
import sys
from pathlib import Path

import pytest

from shared.deploy.hooks import (
    SECRETS,
    AzdCli,
    HookError,
    ensure_secrets,
    postprovision,
    preprovision,
    principal_settings,
    token_claims,
)

ROOT = Path(__file__).resolve().parent.parent.parent


class MemoryAzdEnvironment:
    def __init__(self, values: dict[str, str] | None = None) -> None:
        self.stored = dict(values or {})
        self.writes: list[str] = []

    def values(self) -> dict[str, str]:
        return dict(self.stored)

    def set(self, name: str, value: str) -> None:
        self.stored[name] = value
        self.writes.append(name)


def no_vault(vault: str, name: str) -> str | None:
    return None


def test_first_provision_generates_each_secret_in_its_format():
    env = MemoryAzdEnvironment()
    report = ensure_secrets(env, no_vault)
    assert report == [f"{s.env_name}: generated" for s in SECRETS]
    assert len(base64.b64decode(env.stored["TENANTFLOW_ENCRYPTION_KEY"], validate=True)) == 32
    assert re.fullmatch(r"[0-9a-f]{64}", env.stored["TENANTFLOW_OPERATOR_KEY"])
    password = env.stored["POSTGRES_OWNER_PASSWORD"]
    assert len(password) >= 16 and re.search("[A-Z]", password) and re.search("[a-z]", password) \
        and re.search("[0-9]", password)


def test_re_provision_keeps_every_secret():
    env = MemoryAzdEnvironment()
    ensure_secrets(env, no_vault)
    first = env.values()
    env.writes.clear()
    report = ensure_secrets(env, no_vault)
    assert env.values() == first and env.writes == []
    assert report == [f"{s.env_name}: kept" for s in SECRETS]


def test_a_new_azd_environment_reads_the_secrets_back_from_key_vault():
    kept = {"encryption-key": base64.b64encode(bytes(range(32))).decode(), "operator-key": "op" * 16,
            "postgres-owner-password": "Tfabc123abc123abc123"}
    asked: list[tuple[str, str]] = []

    def vault(vault_name: str, name: str) -> str | None:
        asked.append((vault_name, name))
        return kept.get(name)

    env = MemoryAzdEnvironment({"AZURE_KEY_VAULT_NAME": "kv-abc"})
    report = ensure_secrets(env, vault)
    assert env.stored["TENANTFLOW_ENCRYPTION_KEY"] == kept["encryption-key"]
    assert env.stored["TENANTFLOW_OPERATOR_KEY"] == kept["operator-key"]
    assert env.stored["POSTGRES_OWNER_PASSWORD"] == kept["postgres-owner-password"]
    assert {name for _, name in asked} == set(kept) and {v for v, _ in asked} == {"kv-abc"}
    assert all(line.endswith("read from Key Vault kv-abc") for line in report)


def test_a_malformed_encryption_key_is_refused_never_replaced():
    short = "x" * 15  # what `$(secretOrRandomPassword)` used to give
    env = MemoryAzdEnvironment({"TENANTFLOW_ENCRYPTION_KEY": short})
    with pytest.raises(HookError, match="not 32 bytes of base64; it is never replaced") as error:
        ensure_secrets(env, no_vault)
    assert env.stored["TENANTFLOW_ENCRYPTION_KEY"] == short and short not in str(error.value)


def jwt(claims: dict) -> str:
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"e30.{payload}.sig"


def test_the_entra_administrator_is_whoever_azd_signs_in_as():
    user = token_claims(jwt({"oid": "u-1", "upn": "ada@contoso.com", "idtyp": "user"}))
    assert principal_settings({}, user) == {"AZURE_PRINCIPAL_ID": "u-1", "AZURE_PRINCIPAL_NAME": "ada@contoso.com",
                                            "AZURE_PRINCIPAL_TYPE": "User"}
    app = token_claims(jwt({"oid": "sp-1", "idtyp": "app", "app_displayname": "deployer"}))
    assert principal_settings({}, app)["AZURE_PRINCIPAL_TYPE"] == "ServicePrincipal"
    assert principal_settings({"AZURE_PRINCIPAL_NAME": "set-by-hand"}, user).get("AZURE_PRINCIPAL_NAME") is None


def test_bicep_takes_the_secrets_from_the_azd_environment_and_hooks_exist_for_both_shells():
    parameters = json.loads((ROOT / "infra" / "main.parameters.json").read_text())["parameters"]
    assert parameters["encryptionKey"]["value"] == "${TENANTFLOW_ENCRYPTION_KEY}"
    assert parameters["operatorKey"]["value"] == "${TENANTFLOW_OPERATOR_KEY}"
    assert parameters["postgresOwnerPassword"]["value"] == "${POSTGRES_OWNER_PASSWORD}"
    assert "secretOrRandomPassword" not in json.dumps(parameters)
    azure_yaml = (ROOT / "azure.yaml").read_text()
    for hook in ("preprovision", "postprovision"):
        for script in (f"infra/hooks/{hook}.sh", f"infra/hooks/{hook}.ps1"):
            assert f"./{script}" in azure_yaml and (ROOT / script).exists()
            assert f"shared.deploy.hooks {hook}" in (ROOT / script).read_text()
    bicep = (ROOT / "infra" / "main.bicep").read_text()
    assert "runtime: { name: 'python', version: '3.12' }" in bicep
    assert "enablePurgeProtection: purgeProtection ? true : null" in bicep and "param purgeProtection bool = false" \
        in bicep
    assert "type: 'UserAssigned'" in bicep and "SystemAssigned" not in bicep
    assert "dependsOn: [storageRoleAssignments, vaultSecretsUser, metricsPublisher" in bicep


FAKE_AZD = '''#!{python}
"""Stands in for `azd env get-values --output json` and `azd env set NAME VALUE`, keeping values in a JSON file."""
import json, pathlib, sys
store = pathlib.Path({store!r})
values = json.loads(store.read_text()) if store.exists() else {{}}
args = sys.argv[1:]
if args[:2] == ["env", "get-values"]:
    print(json.dumps(values))
elif args[:2] == ["env", "set"] and len(args) == 4:
    values[args[2]] = args[3]
    store.write_text(json.dumps(values))
else:
    sys.exit(f"fake azd: unexpected {{args}}")
'''


def test_preprovision_through_the_azd_command_makes_secrets_once(tmp_path, monkeypatch, capsys):
    store = tmp_path / "env.json"
    azd = tmp_path / "bin" / "azd"
    azd.parent.mkdir()
    azd.write_text(FAKE_AZD.format(python=sys.executable, store=str(store)))
    azd.chmod(0o755)
    monkeypatch.setenv("PATH", f"{azd.parent}:{os.environ['PATH']}")
    token = jwt({"oid": "u-1", "upn": "ada@contoso.com", "idtyp": "user"})

    def run() -> dict[str, str]:
        preprovision(AzdCli(), vault_lookup=no_vault, token=lambda scope: token, lookup_ip=lambda: "203.0.113.7")
        return json.loads(store.read_text())

    first = run()
    assert len(base64.b64decode(first["TENANTFLOW_ENCRYPTION_KEY"])) == 32
    assert (first["AZURE_PRINCIPAL_NAME"], first["AZURE_PRINCIPAL_ID"], first["AZURE_CLIENT_IP"]) == \
        ("ada@contoso.com", "u-1", "203.0.113.7")
    assert run() == first
    printed = capsys.readouterr().out
    assert "TENANTFLOW_ENCRYPTION_KEY: generated" in printed and "TENANTFLOW_ENCRYPTION_KEY: kept" in printed
    for secret in SECRETS:
        assert first[secret.env_name] not in printed  # secrets never printed


def test_postprovision_names_what_the_azd_environment_lacks_before_touching_anything():
    asked: list[str] = []

    def token(scope: str) -> str:
        asked.append(scope)
        return "t"

    with pytest.raises(HookError) as error:
        postprovision(MemoryAzdEnvironment({"POSTGRES_HOST": "psql-x.postgres.database.azure.com"}), token)
    assert str(error.value) == ("the azd environment lacks POSTGRES_APP_ROLE, POSTGRES_APP_PRINCIPAL_ID, "
                                "POSTGRES_OWNER_PASSWORD, TENANTFLOW_ENCRYPTION_KEY: run `azd provision` again")
    provisioned = {"POSTGRES_HOST": "h", "POSTGRES_APP_ROLE": "id-x", "POSTGRES_APP_PRINCIPAL_ID": "oid",
                   "POSTGRES_OWNER_PASSWORD": "p", "TENANTFLOW_ENCRYPTION_KEY": "k", "POSTGRES_ENTRA_ADMIN": ""}
    with pytest.raises(HookError, match="AZURE_PRINCIPAL_NAME"):
        postprovision(MemoryAzdEnvironment(provisioned), token)
    assert asked == []


def test_only_the_migration_step_holds_the_owner_dsn():
    from psycopg.conninfo import conninfo_to_dict

    from shared.deploy.hooks import migration_env

    values = {"POSTGRES_HOST": "psql-x.postgres.database.azure.com", "POSTGRES_APP_ROLE": "id-x",
              "POSTGRES_OWNER_PASSWORD": "Tf-owner-secret-9", "TENANTFLOW_ENCRYPTION_KEY": "k"}
    env = migration_env(values, {"PATH": "/bin", "TENANTFLOW_URL": "https://func-x.azurewebsites.net"})
    owner, app = conninfo_to_dict(env["TENANTFLOW_POSTGRES_MIGRATION_DSN"]), conninfo_to_dict(
        env["TENANTFLOW_POSTGRES_DSN"])
    assert (owner["user"], owner["password"], owner["sslmode"]) == ("tenantflow_owner", "Tf-owner-secret-9", "require")
    assert app["user"] == "id-x" and "password" not in app and env["TENANTFLOW_POSTGRES_ENTRA"] == "true"
    assert "TENANTFLOW_URL" not in env and env["PATH"] == "/bin"  # `db migrate` runs locally, not against the URL
    bicep = (ROOT / "infra" / "main.bicep").read_text()
    assert "TENANTFLOW_POSTGRES_MIGRATION_DSN" not in bicep.split("appSettings:", 1)[1]
    assert "postgresOwnerPassword" not in bicep.split("appSettings:", 1)[1]
