"""Azure Table storage plumbing: one service client, tables by prefix, key escaping, entity helpers."""

from __future__ import annotations

import json
from typing import Any

FORBIDDEN_KEY_CHARS = set('/\\#?%')
CHUNK = 30_000  # characters per string property (a property holds at most 64 KiB = 32K UTF-16 units)
TABLES = ("tenants", "apikeys", "credentials", "runs", "runids", "usage", "budgets", "counters", "schedules",
          "replay", "members")


def key(value: str) -> str:
    """A PartitionKey/RowKey-safe form of `value`: / \\ # ? % and control characters become %XX. Entities keep
    the original value in a property, so keys never need decoding."""
    return "".join(f"%{ord(c):02X}" if c in FORBIDDEN_KEY_CHARS or ord(c) < 32 or 127 <= ord(c) < 160 else c
                   for c in value)


def put_json(entity: dict[str, Any], name: str, value: Any) -> None:
    """Stores a JSON document across as many string properties as it needs (`name`, `name_1`, …)."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    parts = [text[i:i + CHUNK] for i in range(0, len(text), CHUNK)] or [""]
    entity[name] = parts[0]
    for index, part in enumerate(parts[1:], 1):
        entity[f"{name}_{index}"] = part
    entity[f"{name}_parts"] = len(parts)


def get_json(entity: Any, name: str) -> Any:
    parts = int(entity.get(f"{name}_parts", 1))
    text = entity[name] + "".join(entity[f"{name}_{i}"] for i in range(1, parts))
    return json.loads(text)


class TableClients:
    def __init__(self, connection: str, prefix: str) -> None:
        self.connection = connection
        self.prefix = "".join(c for c in prefix if c.isalnum())
        self.service: Any = None
        self.credential: Any = None
        self.tables: dict[str, Any] = {}

    async def open(self) -> None:
        from azure.data.tables.aio import TableServiceClient

        if self.connection.startswith("https://"):
            from azure.identity.aio import DefaultAzureCredential

            self.credential = DefaultAzureCredential()
            self.service = TableServiceClient(endpoint=self.connection, credential=self.credential)
        else:
            self.service = TableServiceClient.from_connection_string(self.connection)
        for name in TABLES:
            self.tables[name] = await self.service.create_table_if_not_exists(self.prefix + name)

    def __getitem__(self, name: str) -> Any:
        return self.tables[name]

    async def close(self) -> None:
        for table in self.tables.values():
            await table.close()
        if self.service is not None:
            await self.service.close()
        if self.credential is not None:
            await self.credential.close()
