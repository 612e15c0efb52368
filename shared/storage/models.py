"""Records the storage ports read and write. Plain data; no I/O. Secrets are stored only as ciphertext."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Tenant:
    id: str  # slug: [a-z0-9][a-z0-9-]{0,62}
    name: str
    status: str = "active"  # active | suspended
    webhook_secret_blob: str | None = None  # ciphertext envelope of the webhook signing secret
    created_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class ApiKey:
    key_id: str  # public part of the key, unique across tenants
    tenant_id: str
    key_hash: str  # sha256 hex of the full key; the key itself is never stored
    created_at: datetime = field(default_factory=utcnow)
    revoked_at: datetime | None = None


@dataclass(frozen=True)
class StoredCredential:
    tenant_id: str
    name: str
    kind: str  # azure_openai | openai | custom
    endpoint: str | None = None
    api_version: str | None = None
    auth: str = "key"  # key | entra
    configs: dict[str, str] = field(default_factory=dict)  # non-secret settings
    secret_blob: str | None = None  # ciphertext envelope of a JSON object {name: secret}
    key_id: str | None = None  # id of the encryption key that made secret_blob
    version: int = 0  # bumped by every write; adapters set it
    updated_at: datetime = field(default_factory=utcnow)


@dataclass
class StepRecord:
    id: str
    kind: str
    status: str  # succeeded | failed | skipped
    duration_ms: float = 0.0
    usage: dict[str, int] | None = None
    error: str | None = None
    iteration: int | None = None


@dataclass
class RunRecord:
    run_id: str
    tenant_id: str
    flow_id: str
    flow_hash: str
    trigger: str  # http | queue | timer | cli | webhook
    status: str  # queued | running | succeeded | failed | rejected
    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] | None = None
    error: str | None = None
    steps: list[StepRecord] = field(default_factory=list)
    usage: dict[str, Any] = field(default_factory=dict)  # prompt/completion/total tokens, cost (str)
    idempotency_key: str | None = None
    request_hash: str | None = None
    created_at: datetime = field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    api_key_id: str | None = None  # the API key that started the run (its usage records carry it)


@dataclass(frozen=True)
class UsageRecord:
    tenant_id: str
    run_id: str
    flow_id: str
    step_id: str
    iteration: int
    attempt: int
    model: str
    endpoint_host: str
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost: Decimal | None = None
    recorded_at: datetime = field(default_factory=utcnow)
    api_key_id: str | None = None  # the API key that started the run; None: no key (CLI, schedule, webhook)
    estimated: bool = False  # True: the tokens are an estimate (a gateway stream that ended before its usage chunk)

    @property
    def key(self) -> str:
        """Idempotency key: recording the same call twice keeps one record."""
        return f"{self.run_id}|{self.step_id}|{self.iteration}|{self.attempt}"


@dataclass(frozen=True)
class UsageRow:
    """One row of a usage summary (read model). `group` is the group key's value (day, model, flow or tenant)."""

    group: str
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost: Decimal | None
    runs: int


@dataclass(frozen=True)
class Budget:
    tenant_id: str
    monthly_tokens: int | None = None
    monthly_cost: Decimal | None = None


@dataclass(frozen=True)
class BudgetCounters:
    """Per tenant and period (`YYYY-MM`): what is reserved by calls in flight and what was used."""

    tenant_id: str
    period: str
    reserved_tokens: int = 0
    used_tokens: int = 0
    reserved_cost: Decimal = Decimal(0)
    used_cost: Decimal = Decimal(0)

    def with_reservation(self, tokens: int, cost: Decimal, limit_tokens: int | None,
                         limit_cost: Decimal | None) -> BudgetCounters | None:
        """The counters after reserving, or None when used + reserved + this would pass a limit."""
        if limit_tokens is not None and self.used_tokens + self.reserved_tokens + tokens > limit_tokens:
            return None
        if limit_cost is not None and self.used_cost + self.reserved_cost + cost > limit_cost:
            return None
        return replace(self, reserved_tokens=self.reserved_tokens + tokens, reserved_cost=self.reserved_cost + cost)

    def settled(self, reserved_tokens: int, reserved_cost: Decimal, tokens: int, cost: Decimal) -> BudgetCounters:
        """The counters after a reservation turns into actual use (tokens = cost = 0 releases it)."""
        return replace(self, reserved_tokens=max(self.reserved_tokens - reserved_tokens, 0),
                       used_tokens=self.used_tokens + tokens, used_cost=self.used_cost + cost,
                       reserved_cost=max(self.reserved_cost - reserved_cost, Decimal(0)))


@dataclass(frozen=True)
class ModelAlias:
    """A tenant's gateway model name: requests naming `alias` go to `deployment` through the tenant's own credential
    `credential`; `price_as` (a price-file model) prices them instead of the model the upstream reports."""

    tenant_id: str
    alias: str
    credential: str
    deployment: str
    price_as: str | None = None
    updated_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class Schedule:
    id: str
    tenant_id: str
    flow_id: str
    cron: str
    inputs: dict[str, Any] = field(default_factory=dict)
    enabled: bool = True
    created_at: datetime = field(default_factory=utcnow)


def period_of(moment: datetime) -> str:
    """The budget period (calendar month, UTC) a moment falls in: `YYYY-MM`."""
    utc = moment.astimezone(UTC)
    return f"{utc.year:04d}-{utc.month:02d}"


@dataclass(frozen=True)
class Lease:
    """A budget reservation held by one model call of one run, from before the call until its charge (or its
    release) commits, or until it expires and the sweep releases it. `lease_id` is unique per tenant."""

    tenant_id: str
    lease_id: str
    run_id: str
    period: str
    tokens: int
    cost: Decimal
    expires_at: datetime


@dataclass(frozen=True)
class BookBatch:
    """One atomic unit of a run's bookkeeping, applied in this order:

    1. `create_run`: the run is inserted unless its run_id exists (then nothing else in the batch is applied);
    2. `charges`: each usage record is inserted unless its key exists, and only then adds its tokens and cost to
       the `used` counters of its period; each charged or released lease that is still held is deleted and
       subtracted from `reserved` (a lease already released by the sweep is not subtracted twice);
    3. `reserve`: the lease is held and added to `reserved`, unless used + reserved + it would pass `limits`
       (a lease already held is not added twice);
    4. `finish_run`: the run is saved whole, and every lease the run still holds is released (unless
       `leases_held` is False: the run never asked for a lease, so a store need not look for one).

    Replaying a batch changes nothing that its first application did not."""

    tenant_id: str
    create_run: RunRecord | None = None
    charges: tuple[UsageRecord, ...] = ()
    released: tuple[str, ...] = ()  # lease ids: those of the charges, and those of calls that failed
    reserve: Lease | None = None
    limits: Budget | None = None
    finish_run: RunRecord | None = None
    leases_held: bool = True  # False only from a run that never sent a `reserve`: finish_run then has none to release

    @property
    def empty(self) -> bool:
        return not (self.create_run or self.charges or self.released or self.reserve or self.finish_run)


@dataclass(frozen=True)
class BookResult:
    created: bool | None = None  # None: the batch created no run
    reserved: bool | None = None  # None: the batch reserved nothing
    counters: BudgetCounters | None = None  # of the reserved lease's period, after the batch
