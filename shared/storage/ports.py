"""Storage ports: small async ABCs, one per concern. Adapters: sqlite/, postgres/, table/.

Every method that reads or writes tenant data takes the tenant id explicitly; it comes from the run context
(authentication), never from flow input. Adapters raise the errors below, never a driver's own exception
for a condition the port names.
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime

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


class StorageError(Exception):
    """Base class of storage errors."""


class AlreadyExists(StorageError):
    pass


class NotFound(StorageError):
    pass


class StoreUnavailable(StorageError):
    """The store cannot be used right now (unreachable, read-only, full, corrupt, locked). The message names the
    cause in one line and never holds a secret (no DSN, no connection string). Callers answer 503 / retry later;
    nothing acknowledged may be lost."""


class TenantStore(ABC):
    @abstractmethod
    async def add(self, tenant: Tenant) -> None:
        """Raises AlreadyExists if the id is taken."""

    @abstractmethod
    async def get(self, tenant_id: str) -> Tenant | None: ...

    @abstractmethod
    async def list(self) -> builtins.list[Tenant]:
        """All tenants, ordered by id."""

    @abstractmethod
    async def set_status(self, tenant_id: str, status: str) -> None:
        """Raises NotFound."""

    @abstractmethod
    async def set_webhook_secret(self, tenant_id: str, blob: str) -> None:
        """Stores the ciphertext envelope of the webhook secret. Raises NotFound."""

    @abstractmethod
    async def add_api_key(self, key: ApiKey) -> None:
        """Raises AlreadyExists if key_id is taken (by any tenant)."""

    @abstractmethod
    async def get_api_key(self, key_id: str) -> ApiKey | None:
        """Looks a key up by its public id, across tenants (this is how a request finds its tenant)."""

    @abstractmethod
    async def list_api_keys(self, tenant_id: str) -> builtins.list[ApiKey]: ...

    @abstractmethod
    async def revoke_api_key(self, tenant_id: str, key_id: str) -> bool:
        """Sets revoked_at; False if the tenant has no such key."""


class CredentialStore(ABC):
    @abstractmethod
    async def put(self, credential: StoredCredential) -> StoredCredential:
        """Inserts or replaces (tenant_id, name); returns it with version = previous version + 1 (1 if new)."""

    @abstractmethod
    async def get(self, tenant_id: str, name: str) -> StoredCredential | None: ...

    @abstractmethod
    async def list(self, tenant_id: str) -> builtins.list[StoredCredential]:
        """The tenant's credentials, ordered by name."""

    @abstractmethod
    async def delete(self, tenant_id: str, name: str) -> bool: ...

    @abstractmethod
    async def list_not_under_key(self, key_id: str, limit: int = 100) -> builtins.list[StoredCredential]:
        """Across all tenants: credentials with a secret whose key_id differs from `key_id` (for key rotation)."""

    @abstractmethod
    async def replace_secret(
        self, tenant_id: str, name: str, expected_version: int, secret_blob: str, key_id: str
    ) -> bool:
        """Compare-and-swap: re-encrypted secret; bumps version. False if the version moved or the row is gone."""


class RunStore(ABC):
    @abstractmethod
    async def create(self, run: RunRecord) -> bool:
        """Inserts if no run with this run_id exists; False (and no change) otherwise. Atomic."""

    @abstractmethod
    async def get(self, tenant_id: str, run_id: str) -> RunRecord | None:
        """None when the run does not exist or belongs to another tenant."""

    @abstractmethod
    async def transition(self, tenant_id: str, run_id: str, from_statuses: tuple[str, ...], to_status: str) -> bool:
        """Atomically moves the run's status if it is one of `from_statuses`; sets started_at when to 'running'.
        Exactly one of many concurrent callers wins."""

    @abstractmethod
    async def save(self, run: RunRecord) -> None:
        """Writes the whole record (steps, outputs, status, timestamps). Raises NotFound."""

    @abstractmethod
    async def find_by_idempotency_key(self, tenant_id: str, key: str) -> RunRecord | None: ...

    @abstractmethod
    async def list(self, tenant_id: str, limit: int = 50) -> builtins.list[RunRecord]:
        """Newest first."""

    @abstractmethod
    async def list_stale_running(self, started_before: datetime, limit: int = 100) -> builtins.list[RunRecord]:
        """Across all tenants (operator work): runs still `running` that started before `started_before`."""

    @abstractmethod
    async def list_stale_queued(self, created_before: datetime, limit: int = 100) -> builtins.list[RunRecord]:
        """Across all tenants (operator work): runs still `queued` that were created before `created_before`,
        oldest first (their message may have been lost: the sweep sends them again)."""


class UsageLedger(ABC):
    """Bulk write path of usage (imports, benchmarks); runs charge their calls through `Bookkeeping`."""

    @abstractmethod
    async def record(self, records: list[UsageRecord]) -> int:
        """Stores records, batched where the backend allows; a record whose (tenant_id, key) exists is skipped,
        and each new one adds to its tenant's `used` budget counters, in the same transaction. Returns how many
        were new."""

    @abstractmethod
    async def list_for_run(self, tenant_id: str, run_id: str) -> builtins.list[UsageRecord]: ...


GROUP_KEYS = ("day", "model", "flow", "tenant", "key")
NO_API_KEY = "(none)"  # the `key` group of usage no API key started (CLI, schedules, webhooks)


class UsageQueries(ABC):
    """Read models of usage (dashboards, billing exports). Separate from the write path."""

    @abstractmethod
    async def summarize(
        self,
        tenant_id: str | None,
        start: date | None,
        end: date | None,
        group_by: str,
    ) -> builtins.list[UsageRow]:
        """Rows grouped by `group_by` (one of GROUP_KEYS; `key`: the API key id, NO_API_KEY for none), ordered by
        group; `tenant_id` None means all tenants;
        `start`/`end` are inclusive UTC days. Cost is None for a group whose records all lack a price, else the
        sum of known costs. `runs` counts distinct run ids."""


class BudgetStore(ABC):
    @abstractmethod
    async def set_budget(self, budget: Budget) -> None: ...

    @abstractmethod
    async def get_budget(self, tenant_id: str) -> Budget | None: ...

    @abstractmethod
    async def counters(self, tenant_id: str, period: str) -> BudgetCounters: ...


class Bookkeeping(ABC):
    """The run path's writes, each `commit` one atomic transaction (one round trip where the backend allows):
    run creation, budget leases, usage charges and the run's final state. The ledger and the budget counters
    move together, so they can never drift apart: for every tenant and period, `used` is the sum of the ledger
    and `reserved` the sum of the leases held."""

    @abstractmethod
    async def commit(self, batch: BookBatch) -> BookResult:
        """Applies `batch` atomically (see BookBatch for the order and the rules). Idempotent."""

    @abstractmethod
    async def leases(self, tenant_id: str) -> builtins.list[Lease]:
        """The leases the tenant holds now, ordered by lease id."""

    @abstractmethod
    async def release_expired(self, now: datetime, limit: int = 1000) -> int:
        """Across tenants (the timer's sweep): releases leases whose expiry has passed. Returns how many."""


class ScheduleStore(ABC):
    @abstractmethod
    async def add(self, schedule: Schedule) -> None:
        """Raises AlreadyExists."""

    @abstractmethod
    async def get(self, schedule_id: str) -> Schedule | None: ...

    @abstractmethod
    async def list(self, tenant_id: str | None = None) -> builtins.list[Schedule]:
        """Ordered by (tenant_id, id); all tenants when None."""

    @abstractmethod
    async def remove(self, schedule_id: str) -> bool: ...


class TenantMemberStore(ABC):
    """Which principals (Entra object ids or user names, as App Service Authentication names them) may see which
    tenant's dashboard. Principals are stored as given; the service normalises them (lower case)."""

    @abstractmethod
    async def add(self, tenant_id: str, principal: str) -> bool:
        """False when the principal was already a member of the tenant."""

    @abstractmethod
    async def remove(self, tenant_id: str, principal: str) -> bool: ...

    @abstractmethod
    async def list(self, tenant_id: str) -> builtins.list[str]:
        """The tenant's principals, sorted."""

    @abstractmethod
    async def tenants_of(self, principal: str) -> builtins.list[str]:
        """The tenants the principal is a member of, sorted."""


class ModelAliasStore(ABC):
    """A tenant's gateway model aliases (alias → one of its own credentials and a deployment)."""

    @abstractmethod
    async def put(self, alias: ModelAlias) -> None:
        """Inserts or replaces (tenant_id, alias)."""

    @abstractmethod
    async def get(self, tenant_id: str, alias: str) -> ModelAlias | None: ...

    @abstractmethod
    async def list(self, tenant_id: str) -> builtins.list[ModelAlias]:
        """The tenant's aliases, ordered by alias."""

    @abstractmethod
    async def remove(self, tenant_id: str, alias: str) -> bool: ...


class ReplayGuard(ABC):
    """Remembers webhook signatures so that each is accepted once."""

    @abstractmethod
    async def first_use(self, tenant_id: str, nonce: str, expires_at: datetime) -> bool:
        """True the first time (tenant_id, nonce) is seen; False after. Atomic. May purge expired entries."""


class HealthCheck(ABC):
    @abstractmethod
    async def ping(self) -> None:
        """Raises if the store cannot be reached."""


@dataclass
class Stores:
    """Everything a backend provides. Built by shared.storage.factory.open_stores."""

    backend: str
    tenants: TenantStore
    credentials: CredentialStore
    runs: RunStore
    usage: UsageLedger
    usage_queries: UsageQueries
    budgets: BudgetStore
    bookkeeping: Bookkeeping
    schedules: ScheduleStore
    replay: ReplayGuard
    health: HealthCheck
    members: TenantMemberStore
    aliases: ModelAliasStore
    closer: Callable[[], Awaitable[None]] | None = None

    async def close(self) -> None:
        if self.closer is not None:
            await self.closer()
