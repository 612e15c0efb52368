"""Azure Table storage plumbing: one service client, tables by prefix, key escaping, entity helpers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

from shared.storage.ports import StoreUnavailable

FORBIDDEN_KEY_CHARS = set('/\\#?%')
CHUNK = 30_000  # characters per string property (a property holds at most 64 KiB = 32K UTF-16 units)
TABLES = ("tenants", "apikeys", "credentials", "runs", "runids", "usage", "budgets", "schedules",
          "replay", "members", "aliases")


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


def outage(exc: BaseException, endpoint: str) -> StoreUnavailable | None:
    """A StoreUnavailable for errors that mean the service cannot be used now (unreachable, 5xx), else None."""
    from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return StoreUnavailable(f"Azure Table storage at {endpoint} is unreachable")
    if isinstance(exc, HttpResponseError) and (exc.status_code or 0) >= 500:
        return StoreUnavailable(f"Azure Table storage at {endpoint} answered HTTP {exc.status_code}")
    return None


class GuardedTable:
    """A TableClient whose calls raise StoreUnavailable when the service cannot be used (other errors, such as
    ResourceNotFoundError or a failed transaction, pass through unchanged)."""

    def __init__(self, client: Any, endpoint: str) -> None:
        self.client = client
        self.endpoint = endpoint

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.client, name)
        if name in ("list_entities", "query_entities"):
            return lambda *args, **kwargs: self.guard_pages(attribute(*args, **kwargs))
        if not callable(attribute):
            return attribute

        async def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return await attribute(*args, **kwargs)
            except Exception as exc:
                translated = outage(exc, self.endpoint)
                if translated is None:
                    raise
                raise translated from None

        return guarded

    async def guard_pages(self, pages: Any) -> AsyncIterator[Any]:
        try:
            async for entity in pages:
                yield entity
        except Exception as exc:
            translated = outage(exc, self.endpoint)
            if translated is None:
                raise
            raise translated from None


class TableClients:
    def __init__(self, connection: str, prefix: str, credential: Any = None) -> None:
        """`connection`: a connection string, or an account URL used with `credential` (the app's one Azure
        credential, injected by bootstrap; it is not closed here)."""
        self.connection = connection
        self.prefix = "".join(c for c in prefix if c.isalnum())
        self.service: Any = None
        self.credential = credential
        self.tables: dict[str, Any] = {}

    async def open(self) -> None:
        from azure.data.tables.aio import TableServiceClient

        if self.connection.startswith("https://"):
            self.service = TableServiceClient(endpoint=self.connection, credential=self.credential)
        else:
            self.service = TableServiceClient.from_connection_string(self.connection)
        endpoint = self.endpoint()
        try:
            for name in TABLES:
                client = await self.service.create_table_if_not_exists(self.prefix + name)
                self.tables[name] = GuardedTable(client, endpoint)
        except Exception as exc:
            translated = outage(exc, endpoint)
            if translated is None:
                raise
            await self.close()
            raise translated from None

    def endpoint(self) -> str:
        """host:port of the table service, for messages (never the account key)."""
        if self.connection.startswith("https://"):
            return urlsplit(self.connection).netloc
        parts = dict(p.split("=", 1) for p in self.connection.split(";") if "=" in p)
        url = parts.get("TableEndpoint") or f"{parts.get('AccountName', '?')}.table.core.windows.net"
        return urlsplit(url).netloc or url

    def __getitem__(self, name: str) -> Any:
        return self.tables[name]

    async def close(self) -> None:
        for table in self.tables.values():
            await table.client.close()
        self.tables.clear()
        if self.service is not None:
            await self.service.close()
