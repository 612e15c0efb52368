"""Storage against the real servers (scripts/services.sh): ledger writes/s on PostgreSQL (goal ≥ 20,000/s; steady
state, after 10,000 warm-up writes, since a new database's first batches pay for catalog caches and plans) and
Table storage/Azurite, a tenant-month summary over 1,000,000 PostgreSQL ledger rows (goal ≤ 200 ms), and a
cold credential lookup on each server backend."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from psycopg import AsyncConnection
from psycopg.conninfo import make_conninfo

from shared.bootstrap import build_services
from shared.secret import Secret
from shared.storage.models import UsageRecord
from tests.backends import postgres_backend, table_backend

MONTH_START = datetime(2026, 10, 1, tzinfo=UTC)


def records(tenant: str, count: int, run_prefix: str) -> list[UsageRecord]:
    return [UsageRecord(tenant, f"{run_prefix}-{i // 3}", "support-reply", "draft", i % 3, 1, "gpt-4o-mini",
                        "x.openai.azure.com", 120, 40, 160, 0, 0, Decimal("0.000042"),
                        MONTH_START + timedelta(seconds=i)) for i in range(count)]


async def ledger_writes_per_s(stores, count: int, batch: int) -> float:
    rows = records("bench", count, uuid.uuid4().hex[:6])
    started = time.perf_counter()
    for start in range(0, count, batch):
        await stores.usage.record(rows[start:start + batch])
    return round(count / (time.perf_counter() - started))


async def seed_million(owner_dsn: str) -> None:
    """1,000,000 ledger rows over 50 tenants × 4 months, and their read model, written by SQL directly."""
    async with await AsyncConnection.connect(owner_dsn, autocommit=True) as connection:
        await connection.execute("""
            INSERT INTO usage_records
            SELECT 'tenant-' || (g % 50), 'run-' || (g / 3), 'draft', g % 3, 1,
                   (ARRAY['support-reply','triage-batch','grounded-answer'])[1 + g % 3],
                   (ARRAY['gpt-4o-mini','gpt-4o','o4-mini'])[1 + g % 3], 'x.openai.azure.com',
                   100 + g % 50, 20 + g % 30, 120 + g % 50 + g % 30, 0, 0, 0.000042,
                   ts, (ts AT TIME ZONE 'UTC')::date
            FROM (SELECT g, timestamptz '2026-07-01 00:00+00' + g * interval '10 seconds' AS ts
                  FROM generate_series(1, 1000000) AS g) AS s""")
        await connection.execute("""
            INSERT INTO usage_daily
            SELECT tenant_id, day, model, flow_id, sum(prompt_tokens), sum(completion_tokens), sum(total_tokens),
                   sum(cost), count(cost), count(*) FROM usage_records WHERE tenant_id LIKE 'tenant-%'
            GROUP BY 1, 2, 3, 4""")
        await connection.execute("""
            INSERT INTO usage_run_days SELECT DISTINCT tenant_id, day, model, flow_id, run_id FROM usage_records
            WHERE tenant_id LIKE 'tenant-%'""")
        await connection.execute("ANALYZE")


async def cold_lookup_us(svc, tenant: str, calls: int = 200) -> float:
    samples = []
    for _ in range(calls):
        svc.credentials.invalidate(tenant)
        started = time.perf_counter()
        await svc.credentials.load(tenant, "foundry")
        samples.append(time.perf_counter() - started)
    return round(statistics.median(samples) * 1e6, 1)


async def with_backend(module, tmp: Path):
    settings = await module.provision(tmp)
    svc = await build_services(settings)
    await svc.tenants.add("bench-tenant")
    await svc.credentials.set("bench-tenant", "foundry", "azure_openai", endpoint="https://bench.openai.azure.com",
                              api_key=Secret("bench-key"))
    return settings, svc


async def measure() -> dict[str, float]:
    figures: dict[str, float] = {}
    tmp = Path(tempfile.mkdtemp(prefix="tenantflow-bench-"))
    for name, module in (("postgres", postgres_backend), ("table", table_backend)):  # sqlite: credentials_bench
        settings, svc = await with_backend(module, tmp / name)
        try:
            figures[f"{name}_cold_credential_lookup_us"] = await cold_lookup_us(svc, "bench-tenant")
            if name == "postgres":
                await ledger_writes_per_s(svc.stores, 10_000, 2_000)  # warm-up: a new database's first writes
                figures["postgres_ledger_writes_per_s"] = await ledger_writes_per_s(svc.stores, 50_000, 2_000)
                # seeded as the superuser: row-level security (FORCE) binds the owner's writes to one tenant
                await seed_million(make_conninfo(settings.postgres_migration_dsn.reveal(), user="postgres"))
                samples = []
                for _ in range(7):
                    started = time.perf_counter()
                    rows = await svc.stores.usage_queries.summarize("tenant-7", date(2026, 8, 1), date(2026, 8, 31),
                                                                   "day")
                    samples.append(time.perf_counter() - started)
                    assert len(rows) == 31
                figures["postgres_month_summary_1m_rows_ms"] = round(statistics.median(samples) * 1000, 1)
            if name == "table":
                figures["table_ledger_writes_per_s"] = await ledger_writes_per_s(svc.stores, 5_000, 500)
        finally:
            await svc.close()
            await module.dispose(settings)
    return figures


def run() -> dict[str, float]:
    return asyncio.run(measure())
