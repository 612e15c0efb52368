"""Fresh tables per test in Azurite: a random table-name prefix, deleted afterwards."""

from __future__ import annotations

import dataclasses
import uuid

from shared.secret import Secret
from shared.settings import Settings
from tests.backends.fixtures import fresh_encryption_keys, require_service


async def provision(tmp_path) -> Settings:
    connection = require_service("TENANTFLOW_TEST_TABLE_CONNECTION")
    return dataclasses.replace(Settings.from_env({}), store="table", table_connection=Secret(connection),
                               table_prefix="tf" + uuid.uuid4().hex[:10], encryption_keys=fresh_encryption_keys())


async def dispose(settings: Settings) -> None:
    from azure.data.tables.aio import TableServiceClient

    assert settings.table_connection is not None
    async with TableServiceClient.from_connection_string(settings.table_connection.reveal()) as service:
        names = [t.name async for t in service.list_tables() if t.name.startswith(settings.table_prefix)]
        for name in names:
            await service.delete_table(name)
