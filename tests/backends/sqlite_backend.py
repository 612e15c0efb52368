"""A fresh SQLite file per test."""

from __future__ import annotations

import dataclasses

from shared.settings import Settings
from tests.backends.fixtures import fresh_encryption_keys


async def provision(tmp_path) -> Settings:
    return dataclasses.replace(Settings.from_env({}), store="sqlite", sqlite_path=tmp_path / "tenantflow.db",
                               encryption_keys=fresh_encryption_keys())


async def dispose(settings: Settings) -> None:
    return None
