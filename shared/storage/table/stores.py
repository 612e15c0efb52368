"""Azure Table storage adapters of every storage port. PartitionKey = tenant id for tenant data; atomic
updates use ETag optimistic concurrency (If-Match) with retry."""

from __future__ import annotations

import asyncio
import builtins
import random
from collections import defaultdict
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableTransactionError, UpdateMode

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
    period_of,
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
    StoreUnavailable,
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
from shared.storage.table.client import TableClients, get_json, key, put_json

BATCH = 100  # entities per transaction (one partition)
CONFLICT_RETRIES = 200


async def get_entity(table: Any, partition: str, row: str) -> Any | None:
    try:
        return await table.get_entity(partition, row)
    except ResourceNotFoundError:
        return None


async def query(table: Any, text: str, **parameters: Any) -> builtins.list[Any]:
    return [entity async for entity in table.query_entities(text, parameters=parameters)]


async def backoff(attempt: int) -> None:
    await asyncio.sleep(min(0.002 * 2 ** min(attempt, 6), 0.1) * random.random())


class TableTenantStore(TenantStore):
    def __init__(self, tables: TableClients) -> None:
        self.tables = tables

    async def add(self, tenant: Tenant) -> None:
        try:
            await self.tables["tenants"].create_entity({
                "PartitionKey": "tenant", "RowKey": key(tenant.id), "id": tenant.id, "name": tenant.name,
                "status": tenant.status, "webhook_secret_blob": tenant.webhook_secret_blob,
                "created_at": time_text(tenant.created_at)})
        except ResourceExistsError:
            raise AlreadyExists(f"tenant {tenant.id} already exists") from None

    async def get(self, tenant_id: str) -> Tenant | None:
        entity = await get_entity(self.tables["tenants"], "tenant", key(tenant_id))
        return tenant_of(entity) if entity else None

    async def list(self) -> builtins.list[Tenant]:
        found = await query(self.tables["tenants"], "PartitionKey eq 'tenant'")
        return sorted((tenant_of(e) for e in found), key=lambda t: t.id)

    async def update(self, tenant_id: str, **fields: Any) -> None:
        try:
            await self.tables["tenants"].update_entity({"PartitionKey": "tenant", "RowKey": key(tenant_id), **fields},
                                                       mode=UpdateMode.MERGE)
        except ResourceNotFoundError:
            raise NotFound(f"unknown tenant {tenant_id}") from None

    async def set_status(self, tenant_id: str, status: str) -> None:
        await self.update(tenant_id, status=status)

    async def set_webhook_secret(self, tenant_id: str, blob: str) -> None:
        await self.update(tenant_id, webhook_secret_blob=blob)

    async def add_api_key(self, api_key: ApiKey) -> None:
        try:
            await self.tables["apikeys"].create_entity({
                "PartitionKey": key(api_key.key_id), "RowKey": "key", "key_id": api_key.key_id,
                "tenant_id": api_key.tenant_id, "key_hash": api_key.key_hash,
                "created_at": time_text(api_key.created_at), "revoked_at": time_text(api_key.revoked_at)})
        except ResourceExistsError:
            raise AlreadyExists(f"API key {api_key.key_id} already exists") from None

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        entity = await get_entity(self.tables["apikeys"], key(key_id), "key")
        return api_key_of(entity) if entity else None

    async def list_api_keys(self, tenant_id: str) -> builtins.list[ApiKey]:
        found = await query(self.tables["apikeys"], "tenant_id eq @t", t=tenant_id)
        return sorted((api_key_of(e) for e in found), key=lambda k: (k.created_at, k.key_id))

    async def revoke_api_key(self, tenant_id: str, key_id: str) -> bool:
        entity = await get_entity(self.tables["apikeys"], key(key_id), "key")
        if entity is None or entity["tenant_id"] != tenant_id:
            return False
        if not entity.get("revoked_at"):
            entity["revoked_at"] = time_text(datetime.now(UTC))
            await self.tables["apikeys"].update_entity(entity, mode=UpdateMode.REPLACE)
        return True


def tenant_of(e: Any) -> Tenant:
    return Tenant(e["id"], e["name"], e["status"], e.get("webhook_secret_blob"), parse_required_time(e["created_at"]))


def api_key_of(e: Any) -> ApiKey:
    return ApiKey(e["key_id"], e["tenant_id"], e["key_hash"], parse_required_time(e["created_at"]),
                  parse_time(e.get("revoked_at")))


def credential_entity(c: StoredCredential) -> dict[str, Any]:
    entity = {"PartitionKey": key(c.tenant_id), "RowKey": key(c.name), "tenant_id": c.tenant_id, "name": c.name,
              "kind": c.kind, "endpoint": c.endpoint, "api_version": c.api_version, "auth": c.auth,
              "secret_blob": c.secret_blob, "key_id": c.key_id, "version": c.version,
              "updated_at": time_text(c.updated_at)}
    put_json(entity, "configs", c.configs)
    return entity


def credential_of(e: Any) -> StoredCredential:
    return StoredCredential(e["tenant_id"], e["name"], e["kind"], e.get("endpoint"), e.get("api_version"), e["auth"],
                            get_json(e, "configs"), e.get("secret_blob"), e.get("key_id"), int(e["version"]),
                            parse_required_time(e["updated_at"]))


class TableCredentialStore(CredentialStore):
    def __init__(self, tables: TableClients) -> None:
        self.tables = tables

    async def put(self, credential: StoredCredential) -> StoredCredential:
        table = self.tables["credentials"]
        for attempt in range(CONFLICT_RETRIES):
            current = await get_entity(table, key(credential.tenant_id), key(credential.name))
            version = int(current["version"]) + 1 if current else 1
            stored = StoredCredential(**{**credential.__dict__, "version": version, "updated_at": datetime.now(UTC)})
            try:
                if current is None:
                    await table.create_entity(credential_entity(stored))
                else:
                    await table.update_entity(credential_entity(stored), mode=UpdateMode.REPLACE,
                                              etag=current.metadata["etag"],
                                              match_condition=MatchConditions.IfNotModified)
                return stored
            except (ResourceExistsError, ResourceModifiedError):
                await backoff(attempt)
        raise RuntimeError("credential write kept conflicting")

    async def get(self, tenant_id: str, name: str) -> StoredCredential | None:
        entity = await get_entity(self.tables["credentials"], key(tenant_id), key(name))
        return credential_of(entity) if entity else None

    async def list(self, tenant_id: str) -> builtins.list[StoredCredential]:
        found = await query(self.tables["credentials"], "PartitionKey eq @p", p=key(tenant_id))
        return sorted((credential_of(e) for e in found), key=lambda c: c.name)

    async def delete(self, tenant_id: str, name: str) -> bool:
        if await get_entity(self.tables["credentials"], key(tenant_id), key(name)) is None:
            return False
        await self.tables["credentials"].delete_entity(key(tenant_id), key(name))
        return True

    async def list_not_under_key(self, key_id: str, limit: int = 100) -> builtins.list[StoredCredential]:
        found = [credential_of(e) for e in await query(self.tables["credentials"], "key_id ne @k", k=key_id)]
        pending = [c for c in found if c.secret_blob]
        return sorted(pending, key=lambda c: (c.tenant_id, c.name))[:limit]

    async def replace_secret(self, tenant_id: str, name: str, expected_version: int, secret_blob: str,
                             key_id: str) -> bool:
        table = self.tables["credentials"]
        current = await get_entity(table, key(tenant_id), key(name))
        if current is None or int(current["version"]) != expected_version:
            return False
        current.update({"secret_blob": secret_blob, "key_id": key_id, "version": expected_version + 1,
                        "updated_at": time_text(datetime.now(UTC))})
        try:
            await table.update_entity(current, mode=UpdateMode.REPLACE, etag=current.metadata["etag"],
                                      match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        return True


class TableRunStore(RunStore):
    """Runs live in the tenant's partition; a second table keyed by run id makes run ids unique across
    tenants (the first writer of an id wins)."""

    def __init__(self, tables: TableClients) -> None:
        self.tables = tables

    def entity(self, run: RunRecord) -> dict[str, Any]:
        entity = {"PartitionKey": key(run.tenant_id), "RowKey": key(run.run_id), "status": run.status,
                  "idempotency_key": run.idempotency_key or "", "created_at": time_text(run.created_at)}
        put_json(entity, "document", run_to_document(run))
        return entity

    async def create(self, run: RunRecord) -> bool:
        try:
            await self.tables["runids"].create_entity({"PartitionKey": key(run.run_id), "RowKey": "run",
                                                       "tenant_id": run.tenant_id})
        except ResourceExistsError:
            return False
        await self.tables["runs"].create_entity(self.entity(run))
        return True

    async def get(self, tenant_id: str, run_id: str) -> RunRecord | None:
        entity = await get_entity(self.tables["runs"], key(tenant_id), key(run_id))
        return run_from_document(get_json(entity, "document")) if entity else None

    async def transition(self, tenant_id: str, run_id: str, from_statuses: tuple[str, ...], to_status: str) -> bool:
        table = self.tables["runs"]
        for attempt in range(CONFLICT_RETRIES):
            entity = await get_entity(table, key(tenant_id), key(run_id))
            if entity is None or entity["status"] not in from_statuses:
                return False
            run = run_from_document(get_json(entity, "document"))
            run.status = to_status
            if to_status == "running":
                run.started_at = datetime.now(UTC)
            try:
                await table.update_entity(self.entity(run), mode=UpdateMode.REPLACE, etag=entity.metadata["etag"],
                                          match_condition=MatchConditions.IfNotModified)
                return True
            except ResourceModifiedError:
                await backoff(attempt)
        return False

    async def save(self, run: RunRecord) -> None:
        try:
            await self.tables["runs"].update_entity(self.entity(run), mode=UpdateMode.REPLACE)  # If-Match: *
        except ResourceNotFoundError:
            raise NotFound(f"run {run.run_id} not found") from None

    async def find_by_idempotency_key(self, tenant_id: str, idempotency_key: str) -> RunRecord | None:
        found = await query(self.tables["runs"], "PartitionKey eq @p and idempotency_key eq @k", p=key(tenant_id),
                            k=idempotency_key)
        runs = sorted((run_from_document(get_json(e, "document")) for e in found), key=lambda r: r.created_at)
        return runs[0] if runs else None

    async def list(self, tenant_id: str, limit: int = 50) -> builtins.list[RunRecord]:
        found = await query(self.tables["runs"], "PartitionKey eq @p", p=key(tenant_id))
        runs = [run_from_document(get_json(e, "document")) for e in found]
        return sorted(runs, key=lambda r: (r.created_at, r.run_id), reverse=True)[:limit]


    async def list_stale_running(self, started_before: datetime, limit: int = 100) -> builtins.list[RunRecord]:
        found = await query(self.tables["runs"], "status eq 'running'")
        return stale_runs((run_from_document(get_json(e, "document")) for e in found), started_before, limit)

    async def list_stale_queued(self, created_before: datetime, limit: int = 100) -> builtins.list[RunRecord]:
        found = await query(self.tables["runs"], "status eq 'queued'")
        return stale_runs((run_from_document(get_json(e, "document")) for e in found), created_before, limit)


def usage_entity(r: UsageRecord) -> dict[str, Any]:
    return {"PartitionKey": key(r.tenant_id), "RowKey": key(r.key), "tenant_id": r.tenant_id, "run_id": r.run_id,
            "flow_id": r.flow_id, "step_id": r.step_id, "iteration": r.iteration, "attempt": r.attempt,
            "model": r.model, "endpoint_host": r.endpoint_host, "prompt_tokens": r.prompt_tokens,
            "completion_tokens": r.completion_tokens, "total_tokens": r.total_tokens,
            "cached_tokens": r.cached_tokens, "reasoning_tokens": r.reasoning_tokens,
            "cost": None if r.cost is None else str(r.cost), "recorded_at": time_text(r.recorded_at),
            "day": r.recorded_at.astimezone(UTC).date().isoformat(), "api_key_id": r.api_key_id,
            "estimated": r.estimated}


def usage_of(e: Any) -> UsageRecord:
    return UsageRecord(e["tenant_id"], e["run_id"], e["flow_id"], e["step_id"], int(e["iteration"]),
                       int(e["attempt"]), e["model"], e["endpoint_host"], int(e["prompt_tokens"]),
                       int(e["completion_tokens"]), int(e["total_tokens"]), int(e["cached_tokens"]),
                       int(e["reasoning_tokens"]), decimal_or_none(e.get("cost")),
                       parse_required_time(e["recorded_at"]), e.get("api_key_id"),
                       e.get("estimated") is True)  # absent in entities written before the property existed


class TableUsageLedger(UsageLedger):
    """Per tenant, in entity group transactions of at most BATCH records with their counters (Bookkeeping)."""

    def __init__(self, tables: TableClients, bookkeeping: TableBookkeeping) -> None:
        self.tables = tables
        self.bookkeeping = bookkeeping

    async def record(self, records: list[UsageRecord]) -> int:
        groups: dict[tuple[str, str], dict[str, UsageRecord]] = defaultdict(dict)  # (tenant, period): one counter
        for r in records:
            groups[r.tenant_id, period_of(r.recorded_at)].setdefault(r.key, r)
        inserted = 0
        for (tenant, _), unique in groups.items():
            values = list(unique.values())
            chunk = BATCH - 1  # and the period's counter
            for start in range(0, len(values), chunk):
                writes = await self.bookkeeping.apply(BookBatch(tenant, charges=tuple(values[start:start + chunk])))
                inserted += len(writes.records)
        return inserted

    async def list_for_run(self, tenant_id: str, run_id: str) -> builtins.list[UsageRecord]:
        found = await query(self.tables["usage"], "PartitionKey eq @p and RowKey lt '~' and run_id eq @r",
                            p=key(tenant_id), r=run_id)
        return sorted((usage_of(e) for e in found), key=lambda r: (r.recorded_at, r.step_id, r.iteration, r.attempt))


GROUP_FIELDS = {"day": "day", "model": "model", "flow": "flow_id", "tenant": "tenant_id", "key": "api_key_id"}


class TableUsageQueries(UsageQueries):
    def __init__(self, tables: TableClients) -> None:
        self.tables = tables

    async def summarize(self, tenant_id: str | None, start: date | None, end: date | None,
                        group_by: str) -> builtins.list[UsageRow]:
        if group_by not in GROUP_KEYS:
            raise ValueError(f"group_by must be one of {', '.join(GROUP_KEYS)}")
        clauses, params = ["RowKey lt '~'"], {}  # '~…' rows are the partition's counters and leases
        if tenant_id is not None:
            clauses.append("PartitionKey eq @p")
            params["p"] = key(tenant_id)
        if start is not None:
            clauses.append("day ge @start")
            params["start"] = start.isoformat()
        if end is not None:
            clauses.append("day le @end")
            params["end"] = end.isoformat()
        fields = ["tenant_id", "run_id", "prompt_tokens", "completion_tokens", "total_tokens", "cost",
                  GROUP_FIELDS[group_by]]
        table = self.tables["usage"]
        if clauses:
            entities = [e async for e in table.query_entities(" and ".join(clauses), parameters=params,
                                                              select=fields)]
        else:
            entities = [e async for e in table.list_entities(select=fields)]
        field = GROUP_FIELDS[group_by]
        return aggregate_usage((e.get(field) or NO_API_KEY, int(e["prompt_tokens"]), int(e["completion_tokens"]),
                                int(e["total_tokens"]), e.get("cost"), (e["tenant_id"], e["run_id"]))
                               for e in entities)


class TableBudgetStore(BudgetStore):
    def __init__(self, tables: TableClients) -> None:
        self.tables = tables

    async def set_budget(self, budget: Budget) -> None:
        await self.tables["budgets"].upsert_entity({
            "PartitionKey": key(budget.tenant_id), "RowKey": "budget", "monthly_tokens": budget.monthly_tokens,
            "monthly_cost": None if budget.monthly_cost is None else str(budget.monthly_cost)},
            mode=UpdateMode.REPLACE)

    async def get_budget(self, tenant_id: str) -> Budget | None:
        entity = await get_entity(self.tables["budgets"], key(tenant_id), "budget")
        if entity is None:
            return None
        tokens = entity.get("monthly_tokens")
        return Budget(tenant_id, None if tokens is None else int(tokens), decimal_or_none(entity.get("monthly_cost")))

    async def counters(self, tenant_id: str, period: str) -> BudgetCounters:
        return counters_of(await get_entity(self.tables["usage"], key(tenant_id), COUNTER + period), tenant_id, period)


COUNTER, LEASE = "~counter~", "~lease~"  # RowKeys of the budget rows kept in each tenant's usage partition


class TableBookkeeping(Bookkeeping):
    """Ledger records, budget counters and leases share the tenant's partition of the usage table, so one entity
    group transaction moves them together; the counters carry ETags (optimistic concurrency, retried on
    conflict). Table storage has no transaction across tables: a run is created before, and saved after, that
    transaction."""

    def __init__(self, tables: TableClients, runs: TableRunStore) -> None:
        self.tables = tables
        self.runs = runs

    async def commit(self, batch: BookBatch) -> BookResult:
        if batch.create_run is not None and not await self.runs.create(batch.create_run):
            return BookResult(created=False)
        result = await self.apply(batch)
        if batch.finish_run is not None:
            await self.runs.save(batch.finish_run)
        return BookResult(True if batch.create_run is not None else None, result.reserved, result.reserve_counters)

    async def apply(self, batch: BookBatch) -> Any:
        """Charges, releases and the reservation: read → plan → one conditional transaction, retried."""
        table = self.tables["usage"]
        partition = key(batch.tenant_id)
        assume_new = True  # the run path's records are new: read them only after a transaction says otherwise
        for attempt in range(CONFLICT_RETRIES):
            wanted = set(batch.released) | ({batch.reserve.lease_id} if batch.reserve else set())
            held_entities = [e for e in [await get_entity(table, partition, LEASE + key(i)) for i in sorted(wanted)]
                             if e is not None]
            if batch.finish_run is not None and batch.leases_held:
                held_entities += await query(table, "PartitionKey eq @p and RowKey ge @lo and RowKey lt @hi and "
                                                    "lease_run eq @r", p=partition, lo=LEASE, hi=LEASE + "~",
                                             r=batch.finish_run.run_id)
            leases = {lease_of(e).lease_id: (lease_of(e), e) for e in held_entities}
            recorded = set() if assume_new else {
                r.key for r in batch.charges if await get_entity(table, partition, key(r.key)) is not None}
            periods = touched_periods(batch, [lease for lease, _ in leases.values()])
            counter_entities = {p: await get_entity(table, partition, COUNTER + p) for p in sorted(periods)}
            state = BookState({p: counters_of(e, batch.tenant_id, p) for p, e in counter_entities.items()},
                              {i: lease for i, (lease, _) in leases.items()}, recorded)
            writes = plan(batch, state)
            operations: list[Any] = [("create", usage_entity(r)) for r in writes.records]
            operations += [("delete", leases[lease.lease_id][1], {"etag": leases[lease.lease_id][1].metadata["etag"],
                                                                  "match_condition": MatchConditions.IfNotModified})
                           for lease in writes.deleted_leases]
            if writes.new_lease is not None:
                operations.append(("create", lease_entity(writes.new_lease)))
            for period, counters in writes.counters.items():
                values = counter_entity(counters)
                entity = counter_entities.get(period)
                operations.append(("create", values) if entity is None else (
                    "update", values, {"mode": UpdateMode.REPLACE, "etag": entity.metadata["etag"],
                                       "match_condition": MatchConditions.IfNotModified}))
            try:
                if operations:
                    await table.submit_transaction(operations)
                return writes
            except TableTransactionError:
                assume_new = False  # a record that exists, or a counter or lease another writer moved: re-read
                await backoff(attempt)
        raise StoreUnavailable(f"the budget counters of tenant {batch.tenant_id} kept conflicting; retry later")

    async def leases(self, tenant_id: str) -> builtins.list[Lease]:
        found = await query(self.tables["usage"], "PartitionKey eq @p and RowKey ge @lo and RowKey lt @hi",
                            p=key(tenant_id), lo=LEASE, hi=LEASE + "~")
        return sorted((lease_of(e) for e in found), key=lambda lease: lease.lease_id)

    async def release_expired(self, now: datetime, limit: int = 1000) -> int:
        found = await query(self.tables["usage"], "RowKey ge @lo and RowKey lt @hi and expires_at lt @now",
                            lo=LEASE, hi=LEASE + "~", now=time_text(now))
        by_tenant: dict[str, list[str]] = defaultdict(list)
        for entity in found[:limit]:
            lease = lease_of(entity)
            by_tenant[lease.tenant_id].append(lease.lease_id)
        released = 0
        for tenant, ids in by_tenant.items():
            released += len((await self.apply(BookBatch(tenant, released=tuple(ids)))).deleted_leases)
        return released


def counter_entity(c: BudgetCounters) -> dict[str, Any]:
    return {"PartitionKey": key(c.tenant_id), "RowKey": COUNTER + c.period, "reserved_tokens": c.reserved_tokens,
            "used_tokens": c.used_tokens, "reserved_cost": str(c.reserved_cost), "used_cost": str(c.used_cost)}


def lease_entity(lease: Lease) -> dict[str, Any]:
    return {"PartitionKey": key(lease.tenant_id), "RowKey": LEASE + key(lease.lease_id), "tenant_id": lease.tenant_id,
            "lease_id": lease.lease_id, "lease_run": lease.run_id, "period": lease.period, "tokens": lease.tokens,
            "cost": str(lease.cost), "expires_at": time_text(lease.expires_at)}


def lease_of(e: Any) -> Lease:
    return Lease(e["tenant_id"], e["lease_id"], e["lease_run"], e["period"], int(e["tokens"]), Decimal(e["cost"]),
                 parse_required_time(e["expires_at"]))


def counters_of(entity: Any, tenant_id: str, period: str) -> BudgetCounters:
    if entity is None:
        return BudgetCounters(tenant_id, period)
    return BudgetCounters(tenant_id, period, int(entity["reserved_tokens"]), int(entity["used_tokens"]),
                          Decimal(entity["reserved_cost"]), Decimal(entity["used_cost"]))


class TableScheduleStore(ScheduleStore):
    def __init__(self, tables: TableClients) -> None:
        self.tables = tables

    async def add(self, schedule: Schedule) -> None:
        entity = {"PartitionKey": "schedule", "RowKey": key(schedule.id), "id": schedule.id,
                  "tenant_id": schedule.tenant_id, "flow_id": schedule.flow_id, "cron": schedule.cron,
                  "enabled": schedule.enabled, "created_at": time_text(schedule.created_at)}
        put_json(entity, "inputs", schedule.inputs)
        try:
            await self.tables["schedules"].create_entity(entity)
        except ResourceExistsError:
            raise AlreadyExists(f"schedule {schedule.id} already exists") from None

    async def get(self, schedule_id: str) -> Schedule | None:
        entity = await get_entity(self.tables["schedules"], "schedule", key(schedule_id))
        return schedule_of(entity) if entity else None

    async def list(self, tenant_id: str | None = None) -> builtins.list[Schedule]:
        if tenant_id is None:
            found = await query(self.tables["schedules"], "PartitionKey eq 'schedule'")
        else:
            found = await query(self.tables["schedules"], "PartitionKey eq 'schedule' and tenant_id eq @t",
                                t=tenant_id)
        return sorted((schedule_of(e) for e in found), key=lambda s: (s.tenant_id, s.id))

    async def remove(self, schedule_id: str) -> bool:
        if await get_entity(self.tables["schedules"], "schedule", key(schedule_id)) is None:
            return False
        await self.tables["schedules"].delete_entity("schedule", key(schedule_id))
        return True


def schedule_of(e: Any) -> Schedule:
    return Schedule(e["id"], e["tenant_id"], e["flow_id"], e["cron"], get_json(e, "inputs"), bool(e["enabled"]),
                    parse_required_time(e["created_at"]))


class TableReplayGuard(ReplayGuard):
    def __init__(self, tables: TableClients) -> None:
        self.tables = tables

    async def first_use(self, tenant_id: str, nonce: str, expires_at: datetime) -> bool:
        table = self.tables["replay"]
        try:
            await table.create_entity({"PartitionKey": key(tenant_id), "RowKey": key(nonce),
                                       "expires_at": time_text(expires_at)})
        except ResourceExistsError:
            return False
        if random.random() < 0.05:  # purge expired entries now and then
            for entity in await query(table, "PartitionKey eq @p and expires_at lt @now", p=key(tenant_id),
                                      now=time_text(datetime.now(UTC))):
                await table.delete_entity(entity["PartitionKey"], entity["RowKey"])
        return True


class TableHealth(HealthCheck):
    def __init__(self, tables: TableClients) -> None:
        self.tables = tables

    async def ping(self) -> None:
        await query(self.tables["tenants"], "PartitionKey eq 'health'")
