"""`tenantflow db migrate` on Azure Table storage (real Azurite): wave 1's budget counters, kept in a table of their
own, are carried into each tenant's usage partition, following the ledger; a second migrate changes nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from shared.storage.factory import open_stores
from shared.storage.models import UsageRecord
from shared.storage.table.client import key
from shared.storage.table.stores import usage_entity
from tests.backends import table_backend
from tests.backends.fixtures import settings_env
from tests.cli_runner import cli_runner

pytestmark = pytest.mark.services

NOVEMBER, DECEMBER = datetime(2026, 11, 20, 9, tzinfo=UTC), datetime(2026, 12, 2, 9, tzinfo=UTC)


def record(tenant: str, run: str, tokens: int, cost: str, at: datetime) -> UsageRecord:
    return UsageRecord(tenant, run, "support-reply", "draft", 0, 1, "gpt-4o-mini", "example.openai.azure.com",
                       tokens - 10, 10, tokens, cost=Decimal(cost), recorded_at=at)


async def wave_one_store(settings) -> None:
    """What wave 1 left: ledger records in the usage partitions, counters in `<prefix>counters`, no new rows."""
    from azure.data.tables.aio import TableServiceClient

    async with TableServiceClient.from_connection_string(settings.table_connection.reveal()) as service:
        usage = await service.create_table_if_not_exists(settings.table_prefix + "usage")
        for r in (record("acme", "r1", 100, "0.001", DECEMBER), record("acme", "r2", 50, "0.0005", DECEMBER),
                  record("acme", "r0", 70, "0.0007", NOVEMBER), record("globex", "g1", 40, "0.0004", DECEMBER)):
            await usage.create_entity(usage_entity(r))
        counters = await service.create_table_if_not_exists(settings.table_prefix + "counters")
        for tenant, period, used in (("acme", "2026-12", 150), ("acme", "2026-11", 70), ("globex", "2026-12", 35)):
            await counters.create_entity({"PartitionKey": key(tenant), "RowKey": period, "reserved_tokens": 20,
                                          "used_tokens": used, "reserved_cost": "0", "used_cost": "0"})


async def counters_now(settings) -> dict[tuple[str, str], tuple[int, int, Decimal]]:
    stores = await open_stores(settings)
    try:
        found = {}
        for tenant, period in (("acme", "2026-12"), ("acme", "2026-11"), ("globex", "2026-12")):
            c = await stores.budgets.counters(tenant, period)
            found[(tenant, period)] = (c.used_tokens, c.reserved_tokens, c.used_cost)
        return found
    finally:
        await stores.close()


def test_migrate_carries_wave_one_counters_over_following_the_ledger(tmp_path, monkeypatch, capsys):
    settings = asyncio.run(table_backend.provision(tmp_path))
    try:
        asyncio.run(wave_one_store(settings))
        for name, value in settings_env(settings).items():
            monkeypatch.setenv(name, value)
        cli = cli_runner(monkeypatch, capsys)
        assert asyncio.run(counters_now(settings))[("acme", "2026-12")] == (0, 0, Decimal(0))  # before: month reset

        code, out, _ = cli("db", "migrate")
        assert code == 0
        assert "3 carried over from the old counters table, 0 already there" in out
        assert "globex 2026-12: the counter said 35 tokens, the ledger holds 40" in out  # wave 1's drift, reported
        assert asyncio.run(counters_now(settings)) == {
            ("acme", "2026-12"): (150, 0, Decimal("0.0015")), ("acme", "2026-11"): (70, 0, Decimal("0.0007")),
            ("globex", "2026-12"): (40, 0, Decimal("0.0004"))}

        code, out, _ = cli("db", "migrate")
        assert code == 0 and "0 carried over from the old counters table, 3 already there" in out
        assert asyncio.run(counters_now(settings))[("globex", "2026-12")] == (40, 0, Decimal("0.0004"))
    finally:
        asyncio.run(table_backend.dispose(settings))


def test_migrate_on_a_table_store_without_wave_one_tables_says_so(tmp_path, monkeypatch, capsys):
    settings = asyncio.run(table_backend.provision(tmp_path))
    try:
        for name, value in settings_env(settings).items():
            monkeypatch.setenv(name, value)
        code, out, _ = cli_runner(monkeypatch, capsys)("db", "migrate")
        assert code == 0 and out.strip() == "schema is up to date (no wave 1 counters table)"
    finally:
        asyncio.run(table_backend.dispose(settings))
