"""Backend fixtures: `store_settings` is parametrized over every storage backend, `stores` over every backend and
the in-memory fakes.

Each backend module `tests/backends/<name>_backend.py` provisions a fresh, isolated store against the real
server (`provision(tmp_path) -> Settings`) and removes it (`dispose(settings)`). PostgreSQL and Azurite are
started by scripts/services.sh; without them the backend is skipped locally, and fails under CI.
"""

from __future__ import annotations

import base64
import importlib
import os

import pytest

from shared.secret import EncryptionKey
from shared.settings import Settings
from shared.storage.factory import open_stores

BACKENDS = ["sqlite", "postgres", "table"]
STORE_BACKENDS = [*BACKENDS, "memory"]  # the contract suites also hold the in-memory fakes (tests/memory) to them


def fresh_encryption_keys() -> tuple[EncryptionKey, ...]:
    return (EncryptionKey("test", os.urandom(32)),)


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment variables that make Settings.from_env() rebuild `settings` in another process."""
    env = {"TENANTFLOW_STORE": settings.store, "TENANTFLOW_SQLITE_PATH": str(settings.sqlite_path),
           "TENANTFLOW_TABLE_PREFIX": settings.table_prefix,
           "TENANTFLOW_ENCRYPTION_KEY": ",".join(f"{k.kid}:{base64.b64encode(k.key).decode()}"
                                                 for k in settings.encryption_keys)}
    for name, secret in (("TENANTFLOW_POSTGRES_DSN", settings.postgres_dsn),
                         ("TENANTFLOW_POSTGRES_MIGRATION_DSN", settings.postgres_migration_dsn),
                         ("TENANTFLOW_TABLE_CONNECTION", settings.table_connection)):
        if secret is not None:
            env[name] = secret.reveal()
    return env


def require_service(variable: str) -> str:
    value = os.environ.get(variable)
    if value:
        return value
    message = f"{variable} is not set: start the services with `make services-up` (scripts/services.sh)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(params=BACKENDS, ids=BACKENDS)
async def store_settings(request, tmp_path):
    module = importlib.import_module(f"tests.backends.{request.param}_backend")
    settings = await module.provision(tmp_path)
    yield settings
    await module.dispose(settings)


@pytest.fixture(params=STORE_BACKENDS, ids=STORE_BACKENDS)
async def stores(request, tmp_path):
    if request.param == "memory":
        from tests.memory.stores import InMemoryStores

        yield InMemoryStores()
        return
    module = importlib.import_module(f"tests.backends.{request.param}_backend")
    settings = await module.provision(tmp_path)
    opened = await open_stores(settings)
    yield opened
    await opened.close()
    await module.dispose(settings)
