"""PostgreSQL adapters of every storage port. Every transaction names its tenant (row-level security admits that
tenant's rows only); the few reads that span tenants call the tenantflow_* functions of migration 0004."""

from __future__ import annotations

import builtins
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from psycopg import errors
from psycopg.types.json import Jsonb

from shared.storage.models import (
    ApiKey,
    BookBatch,
    BookResult,
    Budget,
    BudgetCounters,
    Lease,
    RunRecord,
    Schedule,
    StoredCredential,
    Tenant,
    UsageRecord,
    UsageRow,
)
from shared.storage.ports import (
    GROUP_KEYS,
    NO_API_KEY,
    AlreadyExists,
    Bookkeeping,
    BudgetStore,
    CredentialStore,
    HealthCheck,
    NotFound,
    ReplayGuard,
    RunStore,
    ScheduleStore,
    TenantStore,
    UsageLedger,
    UsageQueries,
)
from shared.storage.postgres.database import PostgresDatabase
from shared.storage.serialization import run_from_document, run_to_document, time_text


class PostgresTenantStore(TenantStore):
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def add(self, tenant: Tenant) -> None:
        try:
            async with self.db.transaction(tenant.id) as c:
                await c.execute("INSERT INTO tenants VALUES (%s, %s, %s, %s, %s)", (
                    tenant.id, tenant.name, tenant.status, tenant.webhook_secret_blob, tenant.created_at))
        except errors.UniqueViolation:
            raise AlreadyExists(f"tenant {tenant.id} already exists") from None

    async def get(self, tenant_id: str) -> Tenant | None:
        async with self.db.transaction(tenant_id) as c:
            row = await (await c.execute("SELECT * FROM tenants WHERE id = %s", (tenant_id,))).fetchone()
        return Tenant(**row) if row else None

    async def list(self) -> builtins.list[Tenant]:
        async with self.db.transaction() as c:
            found = await (await c.execute("SELECT * FROM tenantflow_tenants()")).fetchall()
        return [Tenant(**row) for row in found]

    async def update(self, tenant_id: str, column: str, value: Any) -> None:
        async with self.db.transaction(tenant_id) as c:
            cursor = await c.execute(f"UPDATE tenants SET {column} = %s WHERE id = %s", (value, tenant_id))
            if cursor.rowcount == 0:
                raise NotFound(f"unknown tenant {tenant_id}")

    async def set_status(self, tenant_id: str, status: str) -> None:
        await self.update(tenant_id, "status", status)

    async def set_webhook_secret(self, tenant_id: str, blob: str) -> None:
        await self.update(tenant_id, "webhook_secret_blob", blob)

    async def add_api_key(self, key: ApiKey) -> None:
        try:
            async with self.db.transaction(key.tenant_id) as c:
                await c.execute("INSERT INTO api_keys VALUES (%s, %s, %s, %s, %s)", (
                    key.key_id, key.tenant_id, key.key_hash, key.created_at, key.revoked_at))
        except errors.UniqueViolation:
            raise AlreadyExists(f"API key {key.key_id} already exists") from None

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        async with self.db.transaction() as c:
            row = await (await c.execute("SELECT * FROM tenantflow_api_key(%s)", (key_id,))).fetchone()
        return ApiKey(**row) if row else None

    async def list_api_keys(self, tenant_id: str) -> builtins.list[ApiKey]:
        async with self.db.transaction(tenant_id) as c:
            found = await (await c.execute("SELECT * FROM api_keys WHERE tenant_id = %s ORDER BY created_at, key_id",
                                           (tenant_id,))).fetchall()
        return [ApiKey(**row) for row in found]

    async def revoke_api_key(self, tenant_id: str, key_id: str) -> bool:
        async with self.db.transaction(tenant_id) as c:
            cursor = await c.execute("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) "
                                     "WHERE tenant_id = %s AND key_id = %s", (tenant_id, key_id))
            return cursor.rowcount == 1


def credential_of(row: dict[str, Any]) -> StoredCredential:
    return StoredCredential(**row)


class PostgresCredentialStore(CredentialStore):
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def put(self, credential: StoredCredential) -> StoredCredential:
        async with self.db.transaction(credential.tenant_id) as c:
            row = await (await c.execute(
                "INSERT INTO credentials VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 1, now()) "
                "ON CONFLICT (tenant_id, name) DO UPDATE SET kind = EXCLUDED.kind, endpoint = EXCLUDED.endpoint, "
                "api_version = EXCLUDED.api_version, auth = EXCLUDED.auth, configs = EXCLUDED.configs, "
                "secret_blob = EXCLUDED.secret_blob, key_id = EXCLUDED.key_id, "
                "version = credentials.version + 1, updated_at = now() RETURNING *",
                (credential.tenant_id, credential.name, credential.kind, credential.endpoint, credential.api_version,
                 credential.auth, Jsonb(credential.configs), credential.secret_blob, credential.key_id))).fetchone()
        return credential_of(row)

    async def get(self, tenant_id: str, name: str) -> StoredCredential | None:
        async with self.db.transaction(tenant_id) as c:
            row = await (await c.execute("SELECT * FROM credentials WHERE tenant_id = %s AND name = %s",
                                         (tenant_id, name))).fetchone()
        return credential_of(row) if row else None

    async def list(self, tenant_id: str) -> builtins.list[StoredCredential]:
        async with self.db.transaction(tenant_id) as c:
            found = await (await c.execute("SELECT * FROM credentials WHERE tenant_id = %s ORDER BY name",
                                           (tenant_id,))).fetchall()
        return [credential_of(row) for row in found]

    async def delete(self, tenant_id: str, name: str) -> bool:
        async with self.db.transaction(tenant_id) as c:
            cursor = await c.execute("DELETE FROM credentials WHERE tenant_id = %s AND name = %s", (tenant_id, name))
            return cursor.rowcount == 1

    async def list_not_under_key(self, key_id: str, limit: int = 100) -> builtins.list[StoredCredential]:
        async with self.db.transaction() as c:
            names = await (await c.execute("SELECT * FROM tenantflow_credentials_not_under_key(%s, %s)",
                                           (key_id, limit))).fetchall()
        found = [await self.get(row["tenant_id"], row["name"]) for row in names]  # each in its tenant's scope
        return [credential for credential in found if credential is not None]

    async def replace_secret(self, tenant_id: str, name: str, expected_version: int, secret_blob: str,
                             key_id: str) -> bool:
        async with self.db.transaction(tenant_id) as c:
            cursor = await c.execute(
                "UPDATE credentials SET secret_blob = %s, key_id = %s, version = version + 1, updated_at = now() "
                "WHERE tenant_id = %s AND name = %s AND version = %s",
                (secret_blob, key_id, tenant_id, name, expected_version))
            return cursor.rowcount == 1


class PostgresRunStore(RunStore):
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def create(self, run: RunRecord) -> bool:
        async with self.db.transaction(run.tenant_id) as c:
            cursor = await c.execute(
                "INSERT INTO runs VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (run_id) DO NOTHING",
                (run.run_id, run.tenant_id, run.flow_id, run.status, run.idempotency_key, run.created_at,
                 Jsonb(run_to_document(run))))
            return cursor.rowcount == 1

    async def get(self, tenant_id: str, run_id: str) -> RunRecord | None:
        async with self.db.transaction(tenant_id) as c:
            row = await (await c.execute("SELECT document FROM runs WHERE tenant_id = %s AND run_id = %s",
                                         (tenant_id, run_id))).fetchone()
        return run_from_document(row["document"]) if row else None

    async def transition(self, tenant_id: str, run_id: str, from_statuses: tuple[str, ...], to_status: str) -> bool:
        started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if to_status == "running" else None
        async with self.db.transaction(tenant_id) as c:
            cursor = await c.execute(
                "UPDATE runs SET status = %(to)s, document = document || jsonb_build_object('status', %(to)s::text)"
                " || CASE WHEN %(started)s::text IS NULL THEN '{}'::jsonb "
                "ELSE jsonb_build_object('started_at', %(started)s::text) END "
                "WHERE tenant_id = %(tenant)s AND run_id = %(run)s AND status = ANY(%(from)s) RETURNING run_id",
                {"to": to_status, "started": started, "tenant": tenant_id, "run": run_id,
                 "from": list(from_statuses)})
            return cursor.rowcount == 1

    async def save(self, run: RunRecord) -> None:
        async with self.db.transaction(run.tenant_id) as c:
            cursor = await c.execute("UPDATE runs SET status = %s, document = %s WHERE tenant_id = %s AND run_id = %s",
                                     (run.status, Jsonb(run_to_document(run)), run.tenant_id, run.run_id))
            if cursor.rowcount == 0:
                raise NotFound(f"run {run.run_id} not found")

    async def find_by_idempotency_key(self, tenant_id: str, key: str) -> RunRecord | None:
        async with self.db.transaction(tenant_id) as c:
            row = await (await c.execute(
                "SELECT document FROM runs WHERE tenant_id = %s AND idempotency_key = %s ORDER BY created_at LIMIT 1",
                (tenant_id, key))).fetchone()
        return run_from_document(row["document"]) if row else None

    async def list(self, tenant_id: str, limit: int = 50) -> builtins.list[RunRecord]:
        async with self.db.transaction(tenant_id) as c:
            found = await (await c.execute(
                "SELECT document FROM runs WHERE tenant_id = %s ORDER BY created_at DESC, run_id LIMIT %s",
                (tenant_id, limit))).fetchall()
        return [run_from_document(row["document"]) for row in found]


    async def list_stale_running(self, started_before: datetime, limit: int = 100) -> builtins.list[RunRecord]:
        async with self.db.transaction() as c:
            ids = await (await c.execute("SELECT * FROM tenantflow_stale_runs(%s, %s)",
                                         (time_text(started_before), limit))).fetchall()
        found = [await self.get(row["tenant_id"], row["run_id"]) for row in ids]  # each in its tenant's scope
        return [run for run in found if run is not None and run.status == "running"]

    async def list_stale_queued(self, created_before: datetime, limit: int = 100) -> builtins.list[RunRecord]:
        async with self.db.transaction() as c:
            ids = await (await c.execute("SELECT * FROM tenantflow_stale_queued_runs(%s, %s)",
                                         (created_before, limit))).fetchall()
        found = [await self.get(row["tenant_id"], row["run_id"]) for row in ids]  # each in its tenant's scope
        return [run for run in found if run is not None and run.status == "queued"]


def usage_row(r: UsageRecord) -> dict[str, Any]:
    """A usage_records row as JSON (for tf_book / tf_insert_usage)."""
    return {"tenant_id": r.tenant_id, "run_id": r.run_id, "step_id": r.step_id, "iteration": r.iteration,
            "attempt": r.attempt, "flow_id": r.flow_id, "model": r.model, "endpoint_host": r.endpoint_host,
            "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
            "total_tokens": r.total_tokens, "cached_tokens": r.cached_tokens, "reasoning_tokens": r.reasoning_tokens,
            "cost": None if r.cost is None else str(r.cost), "recorded_at": time_text(r.recorded_at),
            "day": r.recorded_at.astimezone(UTC).date().isoformat(), "api_key_id": r.api_key_id,
            "estimated": r.estimated}


def run_row(run: RunRecord) -> dict[str, Any]:
    return {"run_id": run.run_id, "flow_id": run.flow_id, "status": run.status,
            "idempotency_key": run.idempotency_key, "created_at": time_text(run.created_at),
            "document": run_to_document(run)}


class PostgresUsageLedger(UsageLedger):
    """Batched per tenant: one call of tf_book (migration 0003) inserts the new records, updates the daily read
    model and the `used` counters from exactly those (existing keys are skipped, so replays change nothing)."""

    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def record(self, records: list[UsageRecord]) -> int:
        by_tenant: dict[str, list[dict[str, Any]]] = {}
        for r in records:
            by_tenant.setdefault(r.tenant_id, []).append(usage_row(r))
        inserted = 0
        for tenant, rows in by_tenant.items():
            inserted += int((await book(self.db, tenant, {"records": rows}))["inserted"])
        return inserted

    async def list_for_run(self, tenant_id: str, run_id: str) -> builtins.list[UsageRecord]:
        async with self.db.transaction(tenant_id) as c:
            found = await (await c.execute(
                "SELECT * FROM usage_records WHERE tenant_id = %s AND run_id = %s "
                "ORDER BY recorded_at, step_id, iteration, attempt", (tenant_id, run_id))).fetchall()
        return [UsageRecord(**{k: v for k, v in row.items() if k != "day"}) for row in found]


GROUP_COLUMNS = {"day": "to_char(day, 'YYYY-MM-DD')", "model": "model", "flow": "flow_id", "tenant": "tenant_id",
                 "key": f"coalesce(nullif(api_key_id, ''), '{NO_API_KEY}')"}


class PostgresUsageQueries(UsageQueries):
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def summarize(self, tenant_id: str | None, start: date | None, end: date | None,
                        group_by: str) -> builtins.list[UsageRow]:
        if group_by not in GROUP_KEYS:
            raise ValueError(f"group_by must be one of {', '.join(GROUP_KEYS)}")
        group = GROUP_COLUMNS[group_by]
        where = "(%(tenant)s::text IS NULL OR tenant_id = %(tenant)s) AND (%(start)s::date IS NULL OR day >= " \
                "%(start)s) AND (%(end)s::date IS NULL OR day <= %(end)s)"
        params = {"tenant": tenant_id, "start": start, "end": end}
        # one tenant: its own rows under row-level security; all tenants (operator): the read-only functions
        daily, run_days = ("usage_daily", "usage_run_days") if tenant_id is not None else (
            "tenantflow_usage_daily(%(start)s, %(end)s)", "tenantflow_usage_run_days(%(start)s, %(end)s)")
        async with self.db.transaction(tenant_id) as c:
            sums = await (await c.execute(
                f"SELECT {group} AS g, sum(prompt_tokens) AS p, sum(completion_tokens) AS c, sum(total_tokens) AS t, "
                f"sum(cost) AS cost, sum(priced_records) AS priced FROM {daily} WHERE {where} GROUP BY 1",
                params)).fetchall()
            runs = await (await c.execute(
                f"SELECT {group} AS g, count(DISTINCT (tenant_id, run_id)) AS runs FROM {run_days} "
                f"WHERE {where} GROUP BY 1", params)).fetchall()
        run_counts = {row["g"]: row["runs"] for row in runs}
        return sorted((UsageRow(row["g"], int(row["p"]), int(row["c"]), int(row["t"]),
                                normalized(row["cost"]) if row["priced"] else None, run_counts.get(row["g"], 0))
                       for row in sums), key=lambda r: r.group)


def normalized(value: Decimal) -> Decimal:
    """numeric(…, 10) pads zeros: 0.1000000000 → 0.1 (same value, the form the other backends give)."""
    return value.normalize() if value != value.to_integral() else value.quantize(Decimal(1))


class PostgresBudgetStore(BudgetStore):
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def set_budget(self, budget: Budget) -> None:
        async with self.db.transaction(budget.tenant_id) as c:
            await c.execute("INSERT INTO budgets VALUES (%s, %s, %s) ON CONFLICT (tenant_id) DO UPDATE SET "
                            "monthly_tokens = EXCLUDED.monthly_tokens, monthly_cost = EXCLUDED.monthly_cost",
                            (budget.tenant_id, budget.monthly_tokens, budget.monthly_cost))

    async def get_budget(self, tenant_id: str) -> Budget | None:
        async with self.db.transaction(tenant_id) as c:
            row = await (await c.execute("SELECT * FROM budgets WHERE tenant_id = %s", (tenant_id,))).fetchone()
        if not row:
            return None
        cost = row["monthly_cost"]
        return Budget(tenant_id, row["monthly_tokens"], normalized(cost) if cost is not None else None)

    async def counters(self, tenant_id: str, period: str) -> BudgetCounters:
        async with self.db.transaction(tenant_id) as c:
            row = await (await c.execute("SELECT * FROM budget_counters WHERE tenant_id = %s AND period = %s",
                                         (tenant_id, period))).fetchone()
        return counters_of(row, tenant_id, period)


async def book(db: PostgresDatabase, tenant_id: str, batch: dict[str, Any]) -> dict[str, Any]:
    """One call of tf_book (migration 0003, as 0010 left it): the batch as JSON, its result as JSON."""
    result = await db.call("SELECT tf_book($1::text, $2::jsonb)", (tenant_id, json.dumps(batch)))
    return json.loads(result or "{}")  # type: ignore[no-any-return]


class PostgresBookkeeping(Bookkeeping):
    """Each commit is one call of tf_book (migration 0003): one statement, one round trip."""

    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def commit(self, batch: BookBatch) -> BookResult:
        payload: dict[str, Any] = {"released": list(batch.released)}
        if batch.create_run is not None:
            payload["create_run"] = run_row(batch.create_run)
        if batch.charges:
            payload["records"] = [usage_row(r) for r in batch.charges]
        if batch.reserve is not None:
            lease = batch.reserve
            payload["reserve"] = {"lease_id": lease.lease_id, "run_id": lease.run_id, "period": lease.period,
                                  "tokens": lease.tokens, "cost": str(lease.cost),
                                  "expires_at": time_text(lease.expires_at)}
            limits = batch.limits
            payload["limits"] = {
                "tokens": limits.monthly_tokens if limits else None,
                "cost": str(limits.monthly_cost) if limits and limits.monthly_cost is not None else None}
        if batch.finish_run is not None:
            payload["finish_run"] = run_row(batch.finish_run)
            if not batch.leases_held:
                payload["leases_held"] = False
        try:
            result = await book(self.db, batch.tenant_id, payload)
        except errors.NoDataFound:
            raise NotFound(f"run {batch.finish_run.run_id if batch.finish_run else '?'} not found") from None
        counters = result.get("counters")
        return BookResult(result.get("created"), result.get("reserved"), None if counters is None else BudgetCounters(
            batch.tenant_id, counters["period"], int(counters["reserved_tokens"]), int(counters["used_tokens"]),
            normalized(Decimal(str(counters["reserved_cost"]))), normalized(Decimal(str(counters["used_cost"])))))

    async def leases(self, tenant_id: str) -> builtins.list[Lease]:
        async with self.db.transaction(tenant_id) as c:
            found = await (await c.execute("SELECT * FROM budget_leases WHERE tenant_id = %s ORDER BY lease_id",
                                           (tenant_id,))).fetchall()
        return [Lease(r["tenant_id"], r["lease_id"], r["run_id"], r["period"], int(r["tokens"]), normalized(r["cost"]),
                      r["expires_at"]) for r in found]

    async def release_expired(self, now: datetime, limit: int = 1000) -> int:
        return int(await self.db.call("SELECT tf_release_expired($1::timestamptz, $2::integer)",
                                      (time_text(now), str(limit))) or 0)


def counters_of(row: dict[str, Any] | None, tenant_id: str, period: str) -> BudgetCounters:
    if row is None:
        return BudgetCounters(tenant_id, period)
    return BudgetCounters(tenant_id, period, int(row["reserved_tokens"]), int(row["used_tokens"]),
                          normalized(row["reserved_cost"]), normalized(row["used_cost"]))


class PostgresScheduleStore(ScheduleStore):
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def add(self, schedule: Schedule) -> None:
        try:
            async with self.db.transaction(schedule.tenant_id) as c:
                await c.execute("INSERT INTO schedules VALUES (%s, %s, %s, %s, %s, %s, %s)", (
                    schedule.id, schedule.tenant_id, schedule.flow_id, schedule.cron, Jsonb(schedule.inputs),
                    schedule.enabled, schedule.created_at))
        except errors.UniqueViolation:
            raise AlreadyExists(f"schedule {schedule.id} already exists") from None

    async def get(self, schedule_id: str) -> Schedule | None:
        async with self.db.transaction() as c:
            row = await (await c.execute("SELECT * FROM tenantflow_schedule(%s)", (schedule_id,))).fetchone()
        return Schedule(**row) if row else None

    async def list(self, tenant_id: str | None = None) -> builtins.list[Schedule]:
        async with self.db.transaction(tenant_id) as c:
            if tenant_id is None:  # the timer's fan-out, the operator's listing
                found = await (await c.execute("SELECT * FROM tenantflow_schedules()")).fetchall()
            else:
                found = await (await c.execute("SELECT * FROM schedules WHERE tenant_id = %s ORDER BY id",
                                               (tenant_id,))).fetchall()
        return [Schedule(**row) for row in found]

    async def remove(self, schedule_id: str) -> bool:
        schedule = await self.get(schedule_id)
        if schedule is None:
            return False
        async with self.db.transaction(schedule.tenant_id) as c:
            return (await c.execute("DELETE FROM schedules WHERE id = %s AND tenant_id = %s",
                                    (schedule_id, schedule.tenant_id))).rowcount == 1


class PostgresReplayGuard(ReplayGuard):
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def first_use(self, tenant_id: str, nonce: str, expires_at: datetime) -> bool:
        async with self.db.transaction(tenant_id) as c:
            await c.execute("DELETE FROM replay_guard WHERE expires_at < now()")
            cursor = await c.execute("INSERT INTO replay_guard VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                                     (tenant_id, nonce, expires_at))
            return cursor.rowcount == 1


class PostgresHealth(HealthCheck):
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def ping(self) -> None:
        async with self.db.transaction() as c:
            await c.execute("SELECT 1")
