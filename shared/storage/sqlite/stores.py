"""SQLite adapters of every storage port."""

from __future__ import annotations

import builtins
import json
import sqlite3
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from shared.storage.bookkeeping import BookState, plan, touched_periods
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
from shared.storage.serialization import (
    aggregate_usage,
    decimal_or_none,
    parse_required_time,
    parse_time,
    run_from_document,
    run_to_document,
    stale_runs,
    time_text,
)
from shared.storage.sqlite.database import SqliteDatabase, rows


class SqliteTenantStore(TenantStore):
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def add(self, tenant: Tenant) -> None:
        def insert(c: sqlite3.Connection) -> None:
            try:
                c.execute("INSERT INTO tenants VALUES (?, ?, ?, ?, ?)", (tenant.id, tenant.name, tenant.status,
                          tenant.webhook_secret_blob, time_text(tenant.created_at)))
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"tenant {tenant.id} already exists") from None

        await self.db.run(insert)

    async def get(self, tenant_id: str) -> Tenant | None:
        found = await self.db.run(lambda c: rows(c, "SELECT * FROM tenants WHERE id = ?", (tenant_id,)))
        return tenant_of(found[0]) if found else None

    async def list(self) -> builtins.list[Tenant]:
        return [tenant_of(r) for r in await self.db.run(lambda c: rows(c, "SELECT * FROM tenants ORDER BY id"))]

    async def update(self, tenant_id: str, column: str, value: Any) -> None:
        def change(c: sqlite3.Connection) -> None:
            if c.execute(f"UPDATE tenants SET {column} = ? WHERE id = ?", (value, tenant_id)).rowcount == 0:
                raise NotFound(f"unknown tenant {tenant_id}")

        await self.db.run(change)

    async def set_status(self, tenant_id: str, status: str) -> None:
        await self.update(tenant_id, "status", status)

    async def set_webhook_secret(self, tenant_id: str, blob: str) -> None:
        await self.update(tenant_id, "webhook_secret_blob", blob)

    async def add_api_key(self, key: ApiKey) -> None:
        def insert(c: sqlite3.Connection) -> None:
            try:
                c.execute("INSERT INTO api_keys VALUES (?, ?, ?, ?, ?)", (key.key_id, key.tenant_id, key.key_hash,
                          time_text(key.created_at), time_text(key.revoked_at)))
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"API key {key.key_id} already exists") from None

        await self.db.run(insert)

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        found = await self.db.run(lambda c: rows(c, "SELECT * FROM api_keys WHERE key_id = ?", (key_id,)))
        return api_key_of(found[0]) if found else None

    async def list_api_keys(self, tenant_id: str) -> builtins.list[ApiKey]:
        found = await self.db.run(lambda c: rows(
            c, "SELECT * FROM api_keys WHERE tenant_id = ? ORDER BY created_at, key_id", (tenant_id,)))
        return [api_key_of(r) for r in found]

    async def revoke_api_key(self, tenant_id: str, key_id: str) -> bool:
        now = time_text(datetime.now(UTC))
        return await self.db.run(lambda c: c.execute(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE tenant_id = ? AND key_id = ?",
            (now, tenant_id, key_id)).rowcount == 1)


def tenant_of(r: sqlite3.Row) -> Tenant:
    return Tenant(r["id"], r["name"], r["status"], r["webhook_secret_blob"], parse_required_time(r["created_at"]))


def api_key_of(r: sqlite3.Row) -> ApiKey:
    return ApiKey(r["key_id"], r["tenant_id"], r["key_hash"], parse_required_time(r["created_at"]),
                  parse_time(r["revoked_at"]))


class SqliteCredentialStore(CredentialStore):
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def put(self, credential: StoredCredential) -> StoredCredential:
        def upsert(c: sqlite3.Connection) -> StoredCredential:
            found = rows(c, "SELECT version FROM credentials WHERE tenant_id = ? AND name = ?",
                         (credential.tenant_id, credential.name))
            version = (found[0]["version"] if found else 0) + 1
            stored = StoredCredential(**{**credential.__dict__, "version": version, "updated_at": datetime.now(UTC)})
            c.execute("INSERT OR REPLACE INTO credentials VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (
                stored.tenant_id, stored.name, stored.kind, stored.endpoint, stored.api_version, stored.auth,
                json.dumps(stored.configs), stored.secret_blob, stored.key_id, version, time_text(stored.updated_at)))
            return stored

        return await self.db.transaction(upsert, immediate=True)

    async def get(self, tenant_id: str, name: str) -> StoredCredential | None:
        found = await self.db.run(lambda c: rows(
            c, "SELECT * FROM credentials WHERE tenant_id = ? AND name = ?", (tenant_id, name)))
        return credential_of(found[0]) if found else None

    async def list(self, tenant_id: str) -> builtins.list[StoredCredential]:
        found = await self.db.run(lambda c: rows(
            c, "SELECT * FROM credentials WHERE tenant_id = ? ORDER BY name", (tenant_id,)))
        return [credential_of(r) for r in found]

    async def delete(self, tenant_id: str, name: str) -> bool:
        return await self.db.run(lambda c: c.execute(
            "DELETE FROM credentials WHERE tenant_id = ? AND name = ?", (tenant_id, name)).rowcount == 1)

    async def list_not_under_key(self, key_id: str, limit: int = 100) -> builtins.list[StoredCredential]:
        found = await self.db.run(lambda c: rows(
            c, "SELECT * FROM credentials WHERE secret_blob IS NOT NULL AND (key_id IS NULL OR key_id != ?) "
               "ORDER BY tenant_id, name LIMIT ?", (key_id, limit)))
        return [credential_of(r) for r in found]

    async def replace_secret(self, tenant_id: str, name: str, expected_version: int, secret_blob: str,
                             key_id: str) -> bool:
        now = time_text(datetime.now(UTC))
        return await self.db.run(lambda c: c.execute(
            "UPDATE credentials SET secret_blob = ?, key_id = ?, version = version + 1, updated_at = ? "
            "WHERE tenant_id = ? AND name = ? AND version = ?",
            (secret_blob, key_id, now, tenant_id, name, expected_version)).rowcount == 1)


def credential_of(r: sqlite3.Row) -> StoredCredential:
    return StoredCredential(r["tenant_id"], r["name"], r["kind"], r["endpoint"], r["api_version"], r["auth"],
                            json.loads(r["configs"]), r["secret_blob"], r["key_id"], r["version"],
                            parse_required_time(r["updated_at"]))


class SqliteRunStore(RunStore):
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def create(self, run: RunRecord) -> bool:
        return await self.db.run(lambda c: insert_run(c, run))

    async def get(self, tenant_id: str, run_id: str) -> RunRecord | None:
        found = await self.db.run(lambda c: rows(
            c, "SELECT document FROM runs WHERE tenant_id = ? AND run_id = ?", (tenant_id, run_id)))
        return run_from_document(json.loads(found[0]["document"])) if found else None

    async def transition(self, tenant_id: str, run_id: str, from_statuses: tuple[str, ...], to_status: str) -> bool:
        def move(c: sqlite3.Connection) -> bool:
            found = rows(c, "SELECT document, status FROM runs WHERE tenant_id = ? AND run_id = ?",
                         (tenant_id, run_id))
            if not found or found[0]["status"] not in from_statuses:
                return False
            document = json.loads(found[0]["document"])
            document["status"] = to_status
            if to_status == "running":
                document["started_at"] = time_text(datetime.now(UTC))
            c.execute("UPDATE runs SET status = ?, document = ? WHERE run_id = ?",
                      (to_status, json.dumps(document), run_id))
            return True

        return await self.db.transaction(move, immediate=True)

    async def save(self, run: RunRecord) -> None:
        await self.db.run(lambda c: save_run(c, run))

    async def find_by_idempotency_key(self, tenant_id: str, key: str) -> RunRecord | None:
        found = await self.db.run(lambda c: rows(
            c, "SELECT document FROM runs WHERE tenant_id = ? AND idempotency_key = ? ORDER BY created_at LIMIT 1",
            (tenant_id, key)))
        return run_from_document(json.loads(found[0]["document"])) if found else None

    async def list(self, tenant_id: str, limit: int = 50) -> builtins.list[RunRecord]:
        found = await self.db.run(lambda c: rows(
            c, "SELECT document FROM runs WHERE tenant_id = ? ORDER BY created_at DESC, run_id LIMIT ?",
            (tenant_id, limit)))
        return [run_from_document(json.loads(r["document"])) for r in found]


    async def list_stale_running(self, started_before: datetime, limit: int = 100) -> builtins.list[RunRecord]:
        found = await self.db.run(lambda c: rows(c, "SELECT document FROM runs WHERE status = 'running'"))
        return stale_runs((run_from_document(json.loads(r["document"])) for r in found), started_before, limit)

    async def list_stale_queued(self, created_before: datetime, limit: int = 100) -> builtins.list[RunRecord]:
        found = await self.db.run(lambda c: rows(c, "SELECT document FROM runs WHERE status = 'queued'"))
        return stale_runs((run_from_document(json.loads(r["document"])) for r in found), created_before, limit)


def insert_run(c: sqlite3.Connection, run: RunRecord) -> bool:
    return c.execute("INSERT OR IGNORE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (
        run.tenant_id, run.run_id, run.flow_id, run.flow_hash, run.trigger, run.status,
        json.dumps(run_to_document(run)), run.idempotency_key, time_text(run.created_at))).rowcount == 1


def save_run(c: sqlite3.Connection, run: RunRecord) -> None:
    if c.execute("UPDATE runs SET status = ?, document = ?, flow_hash = ? WHERE tenant_id = ? AND run_id = ?",
                 (run.status, json.dumps(run_to_document(run)), run.flow_hash, run.tenant_id,
                  run.run_id)).rowcount == 0:
        raise NotFound(f"run {run.run_id} not found")


class SqliteUsageLedger(UsageLedger):
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def record(self, records: list[UsageRecord]) -> int:
        by_tenant: dict[str, list[UsageRecord]] = {}
        for r in records:
            by_tenant.setdefault(r.tenant_id, []).append(r)

        def insert(c: sqlite3.Connection) -> int:
            return sum(len(apply_book(c, BookBatch(tenant, charges=tuple(charges)))[1].records)
                       for tenant, charges in by_tenant.items())

        return await self.db.transaction(insert, immediate=True) if records else 0

    async def list_for_run(self, tenant_id: str, run_id: str) -> builtins.list[UsageRecord]:
        found = await self.db.run(lambda c: rows(
            c, "SELECT * FROM usage_records WHERE tenant_id = ? AND run_id = ? ORDER BY recorded_at, step_id, "
               "iteration, attempt", (tenant_id, run_id)))
        return [UsageRecord(r["tenant_id"], r["run_id"], r["flow_id"], r["step_id"], r["iteration"], r["attempt"],
                            r["model"], r["endpoint_host"], r["prompt_tokens"], r["completion_tokens"],
                            r["total_tokens"], r["cached_tokens"], r["reasoning_tokens"], decimal_or_none(r["cost"]),
                            parse_required_time(r["recorded_at"]), r["api_key_id"], bool(r["estimated"]))
                for r in found]


GROUP_COLUMNS = {"day": "day", "model": "model", "flow": "flow_id", "tenant": "tenant_id",
                 "key": f"coalesce(api_key_id, '{NO_API_KEY}')"}


class SqliteUsageQueries(UsageQueries):
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def summarize(self, tenant_id: str | None, start: date | None, end: date | None,
                        group_by: str) -> builtins.list[UsageRow]:
        if group_by not in GROUP_KEYS:
            raise ValueError(f"group_by must be one of {', '.join(GROUP_KEYS)}")
        where, params = ["1 = 1"], []
        if tenant_id is not None:
            where.append("tenant_id = ?")
            params.append(tenant_id)
        if start is not None:
            where.append("day >= ?")
            params.append(start.isoformat())
        if end is not None:
            where.append("day <= ?")
            params.append(end.isoformat())
        column = GROUP_COLUMNS[group_by]
        sql = (f"SELECT {column} AS g, prompt_tokens, completion_tokens, total_tokens, cost, tenant_id, run_id "
               f"FROM usage_records WHERE {' AND '.join(where)}")
        found = await self.db.run(lambda c: rows(c, sql, params), long_read=True)
        return aggregate_usage((r["g"], r["prompt_tokens"], r["completion_tokens"], r["total_tokens"], r["cost"],
                          (r["tenant_id"], r["run_id"])) for r in found)


class SqliteBudgetStore(BudgetStore):
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def set_budget(self, budget: Budget) -> None:
        await self.db.run(lambda c: c.execute(
            "INSERT OR REPLACE INTO budgets VALUES (?, ?, ?)", (budget.tenant_id, budget.monthly_tokens,
                                                                 None if budget.monthly_cost is None
                                                                 else str(budget.monthly_cost))))

    async def get_budget(self, tenant_id: str) -> Budget | None:
        found = await self.db.run(lambda c: rows(c, "SELECT * FROM budgets WHERE tenant_id = ?", (tenant_id,)))
        if not found:
            return None
        return Budget(tenant_id, found[0]["monthly_tokens"], decimal_or_none(found[0]["monthly_cost"]))

    async def counters(self, tenant_id: str, period: str) -> BudgetCounters:
        return await self.db.run(lambda c: read_counters(c, tenant_id, period))


class SqliteBookkeeping(Bookkeeping):
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def commit(self, batch: BookBatch) -> BookResult:
        return (await self.db.transaction(lambda c: apply_book(c, batch), immediate=True))[0]

    async def leases(self, tenant_id: str) -> builtins.list[Lease]:
        found = await self.db.run(lambda c: rows(c, "SELECT * FROM budget_leases WHERE tenant_id = ? ORDER BY lease_id",
                                                 (tenant_id,)))
        return [lease_of(r) for r in found]

    async def release_expired(self, now: datetime, limit: int = 1000) -> int:
        def release(c: sqlite3.Connection) -> int:
            expired = rows(c, "SELECT tenant_id, lease_id FROM budget_leases WHERE expires_at < ? ORDER BY expires_at "
                              "LIMIT ?", (time_text(now), limit))
            by_tenant: dict[str, list[str]] = {}
            for r in expired:
                by_tenant.setdefault(r["tenant_id"], []).append(r["lease_id"])
            return sum(len(apply_book(c, BookBatch(tenant, released=tuple(ids)))[1].deleted_leases)
                       for tenant, ids in by_tenant.items())

        return await self.db.transaction(release, immediate=True)


def apply_book(c: sqlite3.Connection, batch: BookBatch) -> tuple[BookResult, Any]:
    """Applies a batch inside the caller's BEGIN IMMEDIATE transaction."""
    tenant = batch.tenant_id
    created = None
    if batch.create_run is not None:
        created = insert_run(c, batch.create_run)
        if not created:
            return BookResult(created=False), None
    wanted = set(batch.released) | ({batch.reserve.lease_id} if batch.reserve else set())
    finished = batch.finish_run.run_id if batch.finish_run is not None and batch.leases_held else None
    held = [lease_of(r) for r in rows(c, "SELECT * FROM budget_leases WHERE tenant_id = ?", (tenant,))
            if r["lease_id"] in wanted or r["run_id"] == finished] if wanted or finished else []
    recorded = {f"{r['run_id']}|{r['step_id']}|{r['iteration']}|{r['attempt']}" for r in rows(
        c, "SELECT run_id, step_id, iteration, attempt FROM usage_records WHERE tenant_id = ? AND run_id IN "
           f"({', '.join('?' * len({r.run_id for r in batch.charges}))})",
        (tenant, *{r.run_id for r in batch.charges}))} if batch.charges else set()
    state = BookState({p: read_counters(c, tenant, p) for p in touched_periods(batch, held)},
                      {lease.lease_id: lease for lease in held}, recorded)
    writes = plan(batch, state)
    c.executemany("INSERT INTO usage_records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
        (r.tenant_id, r.run_id, r.step_id, r.iteration, r.attempt, r.flow_id, r.model, r.endpoint_host,
         r.prompt_tokens, r.completion_tokens, r.total_tokens, r.cached_tokens, r.reasoning_tokens,
         None if r.cost is None else str(r.cost), time_text(r.recorded_at),
         r.recorded_at.astimezone(UTC).date().isoformat(), r.api_key_id, int(r.estimated)) for r in writes.records])
    c.executemany("DELETE FROM budget_leases WHERE tenant_id = ? AND lease_id = ?",
                  [(tenant, lease.lease_id) for lease in writes.deleted_leases])
    if writes.new_lease is not None:
        lease = writes.new_lease
        c.execute("INSERT INTO budget_leases VALUES (?, ?, ?, ?, ?, ?, ?)", (
            tenant, lease.lease_id, lease.run_id, lease.period, lease.tokens, str(lease.cost),
            time_text(lease.expires_at)))
    for counters in writes.counters.values():
        write_counters(c, counters)
    if batch.finish_run is not None:
        save_run(c, batch.finish_run)
    return BookResult(created, writes.reserved, writes.reserve_counters), writes


def lease_of(r: sqlite3.Row) -> Lease:
    return Lease(r["tenant_id"], r["lease_id"], r["run_id"], r["period"], r["tokens"], Decimal(r["cost"]),
                 parse_required_time(r["expires_at"]))


def read_counters(c: sqlite3.Connection, tenant_id: str, period: str) -> BudgetCounters:
    found = rows(c, "SELECT * FROM budget_counters WHERE tenant_id = ? AND period = ?", (tenant_id, period))
    if not found:
        return BudgetCounters(tenant_id, period)
    r = found[0]
    return BudgetCounters(tenant_id, period, r["reserved_tokens"], r["used_tokens"], Decimal(r["reserved_cost"]),
                          Decimal(r["used_cost"]))


def write_counters(c: sqlite3.Connection, counters: BudgetCounters) -> None:
    c.execute("INSERT OR REPLACE INTO budget_counters VALUES (?, ?, ?, ?, ?, ?)", (
        counters.tenant_id, counters.period, counters.reserved_tokens, counters.used_tokens,
        str(counters.reserved_cost), str(counters.used_cost)))


class SqliteScheduleStore(ScheduleStore):
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def add(self, schedule: Schedule) -> None:
        def insert(c: sqlite3.Connection) -> None:
            try:
                c.execute("INSERT INTO schedules VALUES (?, ?, ?, ?, ?, ?, ?)", (
                    schedule.id, schedule.tenant_id, schedule.flow_id, schedule.cron, json.dumps(schedule.inputs),
                    int(schedule.enabled), time_text(schedule.created_at)))
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"schedule {schedule.id} already exists") from None

        await self.db.run(insert)

    async def get(self, schedule_id: str) -> Schedule | None:
        found = await self.db.run(lambda c: rows(c, "SELECT * FROM schedules WHERE id = ?", (schedule_id,)))
        return schedule_of(found[0]) if found else None

    async def list(self, tenant_id: str | None = None) -> builtins.list[Schedule]:
        if tenant_id is None:
            found = await self.db.run(lambda c: rows(c, "SELECT * FROM schedules ORDER BY tenant_id, id"))
        else:
            found = await self.db.run(lambda c: rows(
                c, "SELECT * FROM schedules WHERE tenant_id = ? ORDER BY tenant_id, id", (tenant_id,)))
        return [schedule_of(r) for r in found]

    async def remove(self, schedule_id: str) -> bool:
        return await self.db.run(lambda c: c.execute("DELETE FROM schedules WHERE id = ?",
                                                     (schedule_id,)).rowcount == 1)


def schedule_of(r: sqlite3.Row) -> Schedule:
    return Schedule(r["id"], r["tenant_id"], r["flow_id"], r["cron"], json.loads(r["inputs"]), bool(r["enabled"]),
                    parse_required_time(r["created_at"]))


class SqliteReplayGuard(ReplayGuard):
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def first_use(self, tenant_id: str, nonce: str, expires_at: datetime) -> bool:
        now = time_text(datetime.now(UTC))

        def remember(c: sqlite3.Connection) -> bool:
            c.execute("DELETE FROM replay_guard WHERE expires_at < ?", (now,))
            return c.execute("INSERT OR IGNORE INTO replay_guard VALUES (?, ?, ?)",
                             (tenant_id, nonce, time_text(expires_at))).rowcount == 1

        return await self.db.transaction(remember, immediate=True)


class SqliteHealth(HealthCheck):
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def ping(self) -> None:
        await self.db.run(lambda c: c.execute("SELECT 1").fetchone())
