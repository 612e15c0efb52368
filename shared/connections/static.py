"""Static connections: a YAML file of prompt flow–shaped connection documents; secrets come from the environment."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from shared.engine.ports import Connection
from shared.secret import Secret
from shared.settings import Settings

ENV_REFERENCE = re.compile(r"\$\{env:(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<fallback>[^}]*))?\}")
TYPES = {"azure_open_ai": "azure_openai", "azure_openai": "azure_openai", "open_ai": "openai", "openai": "openai"}
KNOWN_KEYS = {"$schema", "name", "type", "api_base", "base_url", "endpoint", "api_key", "api_type", "api_version",
              "auth_mode", "module", "resource_id"}


class ConnectionFileError(ValueError):
    pass


def resolve_env(text: Any, env: Mapping[str, str], where: str) -> Any:
    if not isinstance(text, str):
        return text

    def replace(match: re.Match[str]) -> str:
        value = env.get(match.group("name"))
        if value:
            return value
        if match.group("fallback") is not None:
            return match.group("fallback")
        raise ConnectionFileError(f"{where}: environment variable {match.group('name')} is not set")

    return ENV_REFERENCE.sub(replace, text)


def load_static_connections(path: Path, env: Mapping[str, str] | None = None) -> dict[str, Connection]:
    env = os.environ if env is None else env
    try:
        documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    except (OSError, yaml.YAMLError) as exc:
        raise ConnectionFileError(f"{path}: cannot read connections: {exc}") from None
    connections: dict[str, Connection] = {}
    for index, doc in enumerate(documents, 1):
        where = f"{path}: connection #{index}"
        if not isinstance(doc, dict) or not isinstance(doc.get("name"), str):
            raise ConnectionFileError(f"{where}: each document needs a `name`")
        name = doc["name"]
        where = f"{path}: connection {name}"
        unknown = set(doc) - KNOWN_KEYS
        if unknown:
            raise ConnectionFileError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
        kind = TYPES.get(str(doc.get("type", "azure_open_ai")))
        if kind is None:
            raise ConnectionFileError(f"{where}: type must be azure_open_ai or open_ai")
        if name in connections:
            raise ConnectionFileError(f"{where}: duplicate name")
        endpoint = resolve_env(doc.get("api_base") or doc.get("base_url") or doc.get("endpoint") or "", env, where)
        if kind == "openai" and not endpoint:
            endpoint = "https://api.openai.com/v1"
        auth = "entra" if doc.get("auth_mode") in ("meid_token", "entra") else "key"
        api_key = resolve_env(doc.get("api_key"), env, where) if auth == "key" else None
        connections[name] = Connection(
            name=name,
            kind=kind,
            endpoint=str(endpoint).rstrip("/"),
            api_key=Secret(api_key) if api_key else None,
            auth=auth,
            api_version=str(doc.get("api_version") or "2024-10-21"),
        )
    return connections


def load_settings_connections(settings: Settings, env: Mapping[str, str] | None = None) -> dict[str, Connection]:
    """The static connections file named by settings; the `default` connection's endpoint and key come from
    TENANTFLOW_DEFAULT_ENDPOINT / TENANTFLOW_DEFAULT_API_KEY as read into settings."""
    merged = dict(os.environ if env is None else env)
    merged["TENANTFLOW_DEFAULT_ENDPOINT"] = settings.default_endpoint
    if settings.default_api_key is not None:
        merged["TENANTFLOW_DEFAULT_API_KEY"] = settings.default_api_key.reveal()
    return load_static_connections(settings.connections_file, merged)
