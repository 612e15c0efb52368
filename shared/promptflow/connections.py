"""Prompt flow connection YAML → the fields of a tenant credential (`tenantflow credentials import`).

Types: `azure_open_ai` (api_base, api_key, api_version, auth_mode key | meid_token), `open_ai` (api_key,
base_url, organization) and `custom` (configs, secrets). The credential's name is the YAML's `name`.

A secret written as a placeholder — `<user-input>` or any value in angle brackets, as prompt flow's samples
write them — is read from standard input, one line per placeholder in file order; `${env:NAME}` is read from the
environment. A placeholder is never stored as the secret. Names of custom configs and secrets become credential
field names: lowercase, `-` → `_` (a custom secret named `api_key` / `api-key` is the credential's api_key).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.engine.yaml_source import LocatedDict, YamlSourceError, load_located
from shared.secret import Secret

TYPES = {"azure_open_ai": "azure_openai", "open_ai": "openai", "custom": "custom"}
KEYS = {
    "azure_open_ai": ("$schema", "name", "type", "api_key", "api_base", "api_type", "api_version", "auth_mode",
                      "resource_id", "module"),
    "open_ai": ("$schema", "name", "type", "api_key", "organization", "base_url", "module"),
    "custom": ("$schema", "name", "type", "configs", "secrets", "module"),
}
PLACEHOLDER = re.compile(r"^<[^<>]*>$")
ENV_REFERENCE = re.compile(r"^\$\{env:(?P<name>[A-Za-z_][A-Za-z0-9_]*)\}$")


class ConnectionImportError(ValueError):
    """The connection file cannot be imported; the message names file:line and never a secret value."""


@dataclass
class ImportedCredential:
    name: str
    kind: str  # azure_openai | openai | custom
    endpoint: str | None = None
    api_version: str | None = None
    api_key: Secret | None = None
    entra: bool = False
    configs: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, Secret] = field(default_factory=dict)


def field_name(key: str) -> str:
    return key.strip().lower().replace("-", "_")


def read_connection(path: Path, env: Mapping[str, str], read_line: Callable[[], str]) -> ImportedCredential:
    """Parses the file; fills secrets from `${env:…}` (env) or placeholders (read_line: the next stdin line)."""
    where = str(path)
    try:
        doc = load_located(path.read_text(encoding="utf-8"))
    except YamlSourceError as exc:
        raise ConnectionImportError(f"{where}:{exc.line}: {exc.message}" if exc.line else f"{where}: {exc.message}"
                                    ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConnectionImportError(f"{where}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    if not isinstance(doc, LocatedDict):
        raise ConnectionImportError(f"{where}:1: a connection file is one mapping with name and type")

    def fail(key: str | None, message: str) -> ConnectionImportError:
        line = doc.line_of(key) if key else doc.line
        return ConnectionImportError(f"{where}:{line}: {message}")

    pf_type = doc.get("type")
    if pf_type not in TYPES:
        raise fail("type" if "type" in doc else None, f"type must be one of {', '.join(TYPES)}, got {pf_type!r}")
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise fail("name" if "name" in doc else None, "a connection needs a `name`")
    for key in doc:
        if key not in KEYS[pf_type]:
            raise fail(key, f"unknown key {key!r} for type {pf_type}")

    def secret(key: str, value: Any, line_key: str) -> Secret:
        text = "" if value is None else str(value)
        env_match = ENV_REFERENCE.match(text.strip())
        if env_match:
            variable = env_match.group("name")
            if not env.get(variable):
                raise fail(line_key, f"{key}: environment variable {variable} is not set")
            return Secret(env[variable])
        if "${env:" in text or "<user-input>" in text and not PLACEHOLDER.match(text.strip()):
            raise fail(line_key, f"{key}: write ${{env:NAME}} or <user-input> alone as the value")
        if not text.strip() or PLACEHOLDER.match(text.strip()):
            entered = read_line().strip()
            if not entered or PLACEHOLDER.match(entered):
                raise fail(line_key, f"{key}: a placeholder; no value for it on standard input (one line per "
                           "placeholder, in file order)")
            return Secret(entered)
        return Secret(text)

    def plain(key: str) -> str | None:
        value = doc.get(key)
        if value is None or value == "":
            return None
        text = str(value)
        env_match = ENV_REFERENCE.match(text.strip())
        if env_match:
            if not env.get(env_match.group("name")):
                raise fail(key, f"{key}: environment variable {env_match.group('name')} is not set")
            return env[env_match.group("name")]
        if PLACEHOLDER.match(text.strip()):
            raise fail(key, f"{key}: {text} is a placeholder; write the value or ${{env:NAME}}")
        return text

    credential = ImportedCredential(name=name, kind=TYPES[pf_type])
    if pf_type == "azure_open_ai":
        credential.endpoint = plain("api_base")
        credential.api_version = plain("api_version")
        credential.entra = doc.get("auth_mode") in ("meid_token", "entra")
        if not credential.entra:
            credential.api_key = secret("api_key", doc.get("api_key"), "api_key" if "api_key" in doc else "name")
    elif pf_type == "open_ai":
        credential.endpoint = plain("base_url")
        credential.api_key = secret("api_key", doc.get("api_key"), "api_key" if "api_key" in doc else "name")
        organization = plain("organization")
        if organization:
            credential.configs["organization"] = organization
    else:
        configs, secrets = doc.get("configs") or {}, doc.get("secrets") or {}
        if not isinstance(configs, dict) or not isinstance(secrets, dict):
            raise fail("configs" if not isinstance(configs, dict) else "secrets", "must be a mapping of name: value")
        for key, value in configs.items():
            credential.configs[field_name(str(key))] = "" if value is None else str(value)
        for key, value in secrets.items():
            line_key = "secrets"
            filled = secret(f"secrets.{key}", value, line_key)
            if field_name(str(key)) == "api_key":
                credential.api_key = filled
            else:
                credential.secrets[field_name(str(key))] = filled
    return credential
