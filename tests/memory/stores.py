"""In-memory adapters of every storage port and of the run queue, for fast unit tests of HTTP, queue and timer
behaviour. They pass the same contract suites as the real backends (tests/contract, backend id `memory`).

They live under tests/ on purpose: nothing in the app can select them (TENANTFLOW_STORE knows sqlite, postgres
and table only), so an in-memory store can never hold production data by mistake. Records are copied in and out
(runs as their stored documents), so a caller's later changes never alias stored state, as with a database.
Each method's body runs without an await, so on one event loop every operation is atomic, like a transaction.
`unavailable`, when set, makes every operation raise StoreUnavailable with that cause (a store that is down).
"""

from __future__ import annotations

import builtins
import copy
import json
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any

from shared.clock import Clock, SystemClock
from shared.services.run_queue import RunQueue
from shared.storage.bookkeeping import BookState, BookWrites, plan, touched_periods
from shared.storage.models import (
    ApiKey,
    BookBatch,
    BookResult,
    Budget,
    BudgetCounters,
    Lease,
    ModelAlias,
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
    ModelAliasStore,
    NotFound,
    ReplayGuard,
    RunStore,
    ScheduleStore,
    Stores,
    StoreUnavailable,
    TenantMemberStore,
    TenantStore,
    UsageLedger,
    UsageQueries,
)
from shared.storage.serialization import aggregate_usage, run_from_document, run_to_document, stale_runs, time_text


class MemoryState:
    """Everything one in-memory store holds, plus the fault switch."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.unavailable: str | None = None
        self.operations = 0  # store round trips, for tests and benchmarks
        self.tenants: dict[str, Tenant] = {}
        self.api_keys: dict[str, ApiKey] = {}
        self.credentials: dict[tuple[str, str], StoredCredential] = {}
        self.runs: dict[str, dict[str, Any]] = {}  # run_id → stored document
        self.usage: dict[tuple[str, str], UsageRecord] = {}
        self.budgets: dict[str, Budget] = {}
        self.counters: dict[tuple[str, str], BudgetCounters] = {}
        self.leases: dict[tuple[str, str], Lease] = {}  # (tenant, lease id) → lease
        self.schedules: dict[str, Schedule] = {}
        self.nonces: dict[tuple[str, str], datetime] = {}
        self.members: set[tuple[str, str]] = set()  # (tenant, principal)
        self.aliases: dict[tuple[str, str], ModelAlias] = {}  # (tenant, alias) → alias

    def check(self) -> None:
        if self.unavailable is not None:
            raise StoreUnavailable(self.unavailable)
        self.operations += 1


def stored(run: RunRecord) -> dict[str, Any]:
    return json.loads(json.dumps(run_to_document(run)))


class MemoryTenantStore(TenantStore):
    def __init__(self, state: MemoryState) -> None:
        self.state = state

    async def add(self, tenant: Tenant) -> None:
        self.state.check()
        if tenant.id in self.state.tenants:
            raise AlreadyExists(f"tenant {tenant.id} already exists")
        self.state.tenants[tenant.id] = tenant

    async def get(self, tenant_id: str) -> Tenant | None:
        self.state.check()
        return self.state.tenants.get(tenant_id)

    async def list(self) -> builtins.list[Tenant]:
        self.state.check()
        return [self.state.tenants[k] for k in sorted(self.state.tenants)]

    async def set_status(self, tenant_id: str, status: str) -> None:
        self.state.check()
        self.state.tenants[tenant_id] = replace(self.require(tenant_id), status=status)

    async def set_webhook_secret(self, tenant_id: str, blob: str) -> None:
        self.state.check()
        self.state.tenants[tenant_id] = replace(self.require(tenant_id), webhook_secret_blob=blob)

    def require(self, tenant_id: str) -> Tenant:
        tenant = self.state.tenants.get(tenant_id)
        if tenant is None:
            raise NotFound(f"unknown tenant {tenant_id}")
        return tenant

    async def add_api_key(self, key: ApiKey) -> None:
        self.state.check()
        if key.key_id in self.state.api_keys:
            raise AlreadyExists(f"API key {key.key_id} already exists")
        self.state.api_keys[key.key_id] = key

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        self.state.check()
        return self.state.api_keys.get(key_id)

    async def list_api_keys(self, tenant_id: str) -> builtins.list[ApiKey]:
        self.state.check()
        return sorted((k for k in self.state.api_keys.values() if k.tenant_id == tenant_id),
                      key=lambda k: (k.created_at, k.key_id))

    async def revoke_api_key(self, tenant_id: str, key_id: str) -> bool:
        self.state.check()
        key = self.state.api_keys.get(key_id)
        if key is None or key.tenant_id != tenant_id:
            return False
        if key.revoked_at is None:
            self.state.api_keys[key_id] = replace(key, revoked_at=self.state.clock.now())
        return True


class MemoryCredentialStore(CredentialStore):
    def __init__(self, state: MemoryState) -> None:
        self.state = state

    async def put(self, credential: StoredCredential) -> StoredCredential:
        self.state.check()
        previous = self.state.credentials.get((credential.tenant_id, credential.name))
        saved = replace(credential, configs=copy.deepcopy(credential.configs),
                        version=(previous.version if previous else 0) + 1, updated_at=self.state.clock.now())
        self.state.credentials[(credential.tenant_id, credential.name)] = saved
        return saved

    async def get(self, tenant_id: str, name: str) -> StoredCredential | None:
        self.state.check()
        found = self.state.credentials.get((tenant_id, name))
        return replace(found, configs=copy.deepcopy(found.configs)) if found else None

    async def list(self, tenant_id: str) -> builtins.list[StoredCredential]:
        self.state.check()
        return [replace(c, configs=copy.deepcopy(c.configs))
                for (tenant, _), c in sorted(self.state.credentials.items()) if tenant == tenant_id]

    async def delete(self, tenant_id: str, name: str) -> bool:
        self.state.check()
        return self.state.credentials.pop((tenant_id, name), None) is not None

    async def list_not_under_key(self, key_id: str, limit: int = 100) -> builtins.list[StoredCredential]:
        self.state.check()
        found = [c for _, c in sorted(self.state.credentials.items())
                 if c.secret_blob is not None and c.key_id != key_id]
        return found[:limit]

    async def replace_secret(self, tenant_id: str, name: str, expected_version: int, secret_blob: str,
                             key_id: str) -> bool:
        self.state.check()
        current = self.state.credentials.get((tenant_id, name))
        if current is None or current.version != expected_version:
            return False
        self.state.credentials[(tenant_id, name)] = replace(current, secret_blob=secret_blob, key_id=key_id,
                                                            version=current.version + 1,
                                                            updated_at=self.state.clock.now())
        return True


class MemoryRunStore(RunStore):
    def __init__(self, state: MemoryState) -> None:
        self.state = state

    def document(self, tenant_id: str, run_id: str) -> dict[str, Any] | None:
        document = self.state.runs.get(run_id)
        return document if document is not None and document["tenant_id"] == tenant_id else None

    async def create(self, run: RunRecord) -> bool:
        self.state.check()
        if run.run_id in self.state.runs:
            return False
        self.state.runs[run.run_id] = stored(run)
        return True

    async def get(self, tenant_id: str, run_id: str) -> RunRecord | None:
        self.state.check()
        document = self.document(tenant_id, run_id)
        return run_from_document(copy.deepcopy(document)) if document else None

    async def transition(self, tenant_id: str, run_id: str, from_statuses: tuple[str, ...], to_status: str) -> bool:
        self.state.check()
        document = self.document(tenant_id, run_id)
        if document is None or document["status"] not in from_statuses:
            return False
        document["status"] = to_status
        if to_status == "running":
            document["started_at"] = time_text(self.state.clock.now())
        return True

    async def save(self, run: RunRecord) -> None:
        self.state.check()
        if self.document(run.tenant_id, run.run_id) is None:
            raise NotFound(f"run {run.run_id} not found")
        self.state.runs[run.run_id] = stored(run)

    def all(self) -> builtins.list[RunRecord]:
        return [run_from_document(copy.deepcopy(d)) for d in self.state.runs.values()]

    async def find_by_idempotency_key(self, tenant_id: str, key: str) -> RunRecord | None:
        self.state.check()
        found = sorted((r for r in self.all() if r.tenant_id == tenant_id and r.idempotency_key == key),
                       key=lambda r: r.created_at)
        return found[0] if found else None

    async def list(self, tenant_id: str, limit: int = 50) -> builtins.list[RunRecord]:
        self.state.check()
        found = sorted((r for r in self.all() if r.tenant_id == tenant_id), key=lambda r: r.run_id)
        return sorted(found, key=lambda r: r.created_at, reverse=True)[:limit]

    async def list_stale_running(self, started_before: datetime, limit: int = 100) -> builtins.list[RunRecord]:
        self.state.check()
        return stale_runs((r for r in self.all() if r.status == "running"), started_before, limit)

    async def list_stale_queued(self, created_before: datetime, limit: int = 100) -> builtins.list[RunRecord]:
        self.state.check()
        return stale_runs((r for r in self.all() if r.status == "queued"), created_before, limit)


class MemoryUsageLedger(UsageLedger):
    def __init__(self, state: MemoryState) -> None:
        self.state = state

    async def record(self, records: list[UsageRecord]) -> int:
        self.state.check()
        by_tenant: dict[str, list[UsageRecord]] = {}
        for record in records:
            by_tenant.setdefault(record.tenant_id, []).append(record)
        return sum(len(apply_book(self.state, BookBatch(tenant, charges=tuple(charges)))[1].records)
                   for tenant, charges in by_tenant.items())

    async def list_for_run(self, tenant_id: str, run_id: str) -> builtins.list[UsageRecord]:
        self.state.check()
        return sorted((r for r in self.state.usage.values() if r.tenant_id == tenant_id and r.run_id == run_id),
                      key=lambda r: (r.recorded_at, r.step_id, r.iteration, r.attempt))


class MemoryUsageQueries(UsageQueries):
    def __init__(self, state: MemoryState) -> None:
        self.state = state

    async def summarize(self, tenant_id: str | None, start: date | None, end: date | None,
                        group_by: str) -> builtins.list[UsageRow]:
        self.state.check()
        if group_by not in GROUP_KEYS:
            raise ValueError(f"group_by must be one of {', '.join(GROUP_KEYS)}")
        selected = []
        for r in self.state.usage.values():
            day = r.recorded_at.astimezone(UTC).date()
            if (tenant_id is None or r.tenant_id == tenant_id) and (start is None or day >= start) \
                    and (end is None or day <= end):
                group = {"day": day.isoformat(), "model": r.model, "flow": r.flow_id, "tenant": r.tenant_id,
                         "key": r.api_key_id or NO_API_KEY}[group_by]
                selected.append((group, r.prompt_tokens, r.completion_tokens, r.total_tokens,
                                 None if r.cost is None else str(r.cost), (r.tenant_id, r.run_id)))
        return aggregate_usage(selected)


class MemoryBudgetStore(BudgetStore):
    def __init__(self, state: MemoryState) -> None:
        self.state = state

    async def set_budget(self, budget: Budget) -> None:
        self.state.check()
        self.state.budgets[budget.tenant_id] = budget

    async def get_budget(self, tenant_id: str) -> Budget | None:
        self.state.check()
        return self.state.budgets.get(tenant_id)

    async def counters(self, tenant_id: str, period: str) -> BudgetCounters:
        self.state.check()
        return self.state.counters.get((tenant_id, period)) or BudgetCounters(tenant_id, period)


class MemoryBookkeeping(Bookkeeping):
    def __init__(self, state: MemoryState) -> None:
        self.state = state

    async def commit(self, batch: BookBatch) -> BookResult:
        self.state.check()
        return apply_book(self.state, batch)[0]

    async def leases(self, tenant_id: str) -> builtins.list[Lease]:
        self.state.check()
        return sorted((lease for (tenant, _), lease in self.state.leases.items() if tenant == tenant_id),
                      key=lambda lease: lease.lease_id)

    async def release_expired(self, now: datetime, limit: int = 1000) -> int:
        self.state.check()
        expired = sorted((lease for lease in self.state.leases.values() if lease.expires_at < now),
                         key=lambda lease: lease.expires_at)[:limit]
        by_tenant: dict[str, list[str]] = {}
        for lease in expired:
            by_tenant.setdefault(lease.tenant_id, []).append(lease.lease_id)
        return sum(len(apply_book(self.state, BookBatch(tenant, released=tuple(ids)))[1].deleted_leases)
                   for tenant, ids in by_tenant.items())


def apply_book(state: MemoryState, batch: BookBatch) -> tuple[BookResult, BookWrites]:
    """Applies a batch by the rules of shared.storage.bookkeeping; everything is checked before anything is
    written, so a batch that fails changes nothing (as a rolled-back transaction)."""
    tenant = batch.tenant_id
    if batch.create_run is not None and batch.create_run.run_id in state.runs:
        return BookResult(created=False), BookWrites()
    finish = batch.finish_run
    if finish is not None and finish.run_id not in state.runs and (
            batch.create_run is None or batch.create_run.run_id != finish.run_id):
        raise NotFound(f"run {finish.run_id} not found")
    wanted = set(batch.released) | ({batch.reserve.lease_id} if batch.reserve else set())
    held = [lease for (owner, lease_id), lease in state.leases.items()
            if owner == tenant and (lease_id in wanted or (finish is not None and batch.leases_held
                                                           and lease.run_id == finish.run_id))]
    recorded = {key for owner, key in state.usage if owner == tenant}
    book = BookState({p: state.counters.get((tenant, p)) or BudgetCounters(tenant, p)
                      for p in touched_periods(batch, held)}, {lease.lease_id: lease for lease in held}, recorded)
    writes = plan(batch, book)
    if batch.create_run is not None:
        state.runs[batch.create_run.run_id] = stored(batch.create_run)
    for record in writes.records:
        state.usage[(tenant, record.key)] = record
    for lease in writes.deleted_leases:
        state.leases.pop((tenant, lease.lease_id), None)
    if writes.new_lease is not None:
        state.leases[(tenant, writes.new_lease.lease_id)] = writes.new_lease
    for counters in writes.counters.values():
        state.counters[(tenant, counters.period)] = counters
    if finish is not None:
        state.runs[finish.run_id] = stored(finish)
    created = True if batch.create_run is not None else None
    return BookResult(created, writes.reserved, writes.reserve_counters), writes


class MemoryScheduleStore(ScheduleStore):
    def __init__(self, state: MemoryState) -> None:
        self.state = state

    async def add(self, schedule: Schedule) -> None:
        self.state.check()
        if schedule.id in self.state.schedules:
            raise AlreadyExists(f"schedule {schedule.id} already exists")
        self.state.schedules[schedule.id] = replace(schedule, inputs=copy.deepcopy(schedule.inputs))

    async def get(self, schedule_id: str) -> Schedule | None:
        self.state.check()
        return self.state.schedules.get(schedule_id)

    async def list(self, tenant_id: str | None = None) -> builtins.list[Schedule]:
        self.state.check()
        return sorted((s for s in self.state.schedules.values() if tenant_id is None or s.tenant_id == tenant_id),
                      key=lambda s: (s.tenant_id, s.id))

    async def remove(self, schedule_id: str) -> bool:
        self.state.check()
        return self.state.schedules.pop(schedule_id, None) is not None


class MemoryReplayGuard(ReplayGuard):
    def __init__(self, state: MemoryState) -> None:
        self.state = state

    async def first_use(self, tenant_id: str, nonce: str, expires_at: datetime) -> bool:
        self.state.check()
        now = self.state.clock.now()
        for key in [k for k, expires in self.state.nonces.items() if expires < now]:
            del self.state.nonces[key]
        if (tenant_id, nonce) in self.state.nonces:
            return False
        self.state.nonces[(tenant_id, nonce)] = expires_at
        return True


class MemoryHealth(HealthCheck):
    def __init__(self, state: MemoryState) -> None:
        self.state = state

    async def ping(self) -> None:
        self.state.check()


class MemoryTenantMemberStore(TenantMemberStore):
    def __init__(self, state: MemoryState) -> None:
        self.state = state

    async def add(self, tenant_id: str, principal: str) -> bool:
        self.state.check()
        if (tenant_id, principal) in self.state.members:
            return False
        self.state.members.add((tenant_id, principal))
        return True

    async def remove(self, tenant_id: str, principal: str) -> bool:
        self.state.check()
        if (tenant_id, principal) not in self.state.members:
            return False
        self.state.members.discard((tenant_id, principal))
        return True

    async def list(self, tenant_id: str) -> builtins.list[str]:
        self.state.check()
        return sorted(p for t, p in self.state.members if t == tenant_id)

    async def tenants_of(self, principal: str) -> builtins.list[str]:
        self.state.check()
        return sorted(t for t, p in self.state.members if p == principal)


class MemoryModelAliasStore(ModelAliasStore):
    def __init__(self, state: MemoryState) -> None:
        self.state = state

    async def put(self, alias: ModelAlias) -> None:
        self.state.check()
        self.state.aliases[(alias.tenant_id, alias.alias)] = alias

    async def get(self, tenant_id: str, alias: str) -> ModelAlias | None:
        self.state.check()
        return self.state.aliases.get((tenant_id, alias))

    async def list(self, tenant_id: str) -> builtins.list[ModelAlias]:
        self.state.check()
        return [a for (t, _), a in sorted(self.state.aliases.items()) if t == tenant_id]

    async def remove(self, tenant_id: str, alias: str) -> bool:
        self.state.check()
        return self.state.aliases.pop((tenant_id, alias), None) is not None


class InMemoryStores(Stores):
    """Fresh, empty in-memory stores of every port; `state` holds what they store (to inspect, or to switch
    `unavailable`)."""

    def __init__(self, clock: Clock | None = None) -> None:
        state = MemoryState(clock or SystemClock())
        super().__init__(backend="memory", tenants=MemoryTenantStore(state), credentials=MemoryCredentialStore(state),
                         runs=MemoryRunStore(state), usage=MemoryUsageLedger(state),
                         usage_queries=MemoryUsageQueries(state), budgets=MemoryBudgetStore(state),
                         bookkeeping=MemoryBookkeeping(state), schedules=MemoryScheduleStore(state),
                         replay=MemoryReplayGuard(state), health=MemoryHealth(state),
                         members=MemoryTenantMemberStore(state), aliases=MemoryModelAliasStore(state))
        self.state = state


class InMemoryRunQueue(RunQueue):
    """A run queue in a list: `messages` holds what was sent (oldest first); `down` makes it unreachable."""

    def __init__(self) -> None:
        self.messages: builtins.list[dict[str, Any]] = []
        self.down = False

    async def send(self, message: dict[str, Any]) -> None:
        if self.down:
            raise ConnectionError("the in-memory queue is down")
        self.messages.append(json.loads(json.dumps(message)))

    async def ping(self) -> None:
        if self.down:
            raise ConnectionError("the in-memory queue is down")

    def receive(self) -> builtins.list[dict[str, Any]]:
        """Takes every message sent so far."""
        taken, self.messages = self.messages, []
        return taken



