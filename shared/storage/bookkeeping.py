"""The rules of a BookBatch, for adapters that read, decide and then write (SQLite, Table storage, in-memory).
PostgreSQL applies the same rules in one SQL function (migration 0003). Pure: no I/O."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from shared.storage.models import BookBatch, BudgetCounters, Lease, UsageRecord, period_of


@dataclass
class BookState:
    """What a batch reads before it writes: the counters of the periods it touches, the leases it may release or
    hold (by id), and which of its records already exist."""

    counters: dict[str, BudgetCounters]
    leases: dict[str, Lease]
    recorded: set[str]


@dataclass
class BookWrites:
    records: list[UsageRecord] = field(default_factory=list)  # new records to insert
    counters: dict[str, BudgetCounters] = field(default_factory=dict)  # counters to write, by period
    deleted_leases: list[Lease] = field(default_factory=list)
    new_lease: Lease | None = None
    reserved: bool | None = None
    reserve_counters: BudgetCounters | None = None  # of the reserve's period, after the batch


def touched_periods(batch: BookBatch, leases: Iterable[Lease]) -> set[str]:
    periods = {period_of(r.recorded_at) for r in batch.charges} | {lease.period for lease in leases}
    if batch.reserve is not None:
        periods.add(batch.reserve.period)
    return periods


def lease_ids_to_release(batch: BookBatch, run_leases: Iterable[Lease]) -> set[str]:
    """The leases a batch releases: those named, and with `finish_run` every lease of that run."""
    ids = set(batch.released)
    if batch.finish_run is not None and batch.leases_held:
        ids |= {lease.lease_id for lease in run_leases if lease.run_id == batch.finish_run.run_id}
    return ids


def plan(batch: BookBatch, state: BookState) -> BookWrites:
    """Steps 2–4 of BookBatch (creation and the run's final save are the adapter's)."""
    writes = BookWrites()
    counters = dict(state.counters)

    def counter(period: str) -> BudgetCounters:
        return counters.get(period) or BudgetCounters(batch.tenant_id, period)

    seen: set[str] = set()
    for record in batch.charges:
        if record.key in state.recorded or record.key in seen:
            continue
        seen.add(record.key)
        writes.records.append(record)
        period = period_of(record.recorded_at)
        counters[period] = counter(period).settled(0, Decimal(0), record.total_tokens, record.cost or Decimal(0))
    release = lease_ids_to_release(batch, state.leases.values())
    for lease_id in sorted(release):
        lease = state.leases.get(lease_id)
        if lease is None:  # never held, or already released (by the sweep): nothing to subtract
            continue
        writes.deleted_leases.append(lease)
        counters[lease.period] = counter(lease.period).settled(lease.tokens, lease.cost, 0, Decimal(0))
    lease = batch.reserve
    if lease is not None:
        if lease.lease_id in state.leases and lease.lease_id not in release:
            writes.reserved = True  # a replay: held already
        else:
            limits = batch.limits
            after = counter(lease.period).with_reservation(
                lease.tokens, lease.cost, limits.monthly_tokens if limits else None,
                limits.monthly_cost if limits else None)
            writes.reserved = after is not None
            if after is not None:
                counters[lease.period] = after
                writes.new_lease = lease
        writes.reserve_counters = counter(lease.period)
    writes.counters = {p: c for p, c in counters.items() if c != state.counters.get(p)}
    return writes
