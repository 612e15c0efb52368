"""Contract: UsageLedger, UsageQueries, BudgetStore, ScheduleStore, ReplayGuard, HealthCheck — every backend."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from shared.services.usage import UsageQuery, UsageService, to_csv
from shared.storage.models import BookBatch, Budget, Lease, RunRecord, Schedule, Tenant, UsageRecord, period_of
from shared.storage.ports import NO_API_KEY, AlreadyExists


def record(tenant, run, step="s", iteration=0, attempt=1, model="gpt-4o-mini", flow="f", cost="0.1",
           when=datetime(2026, 11, 3, 12, tzinfo=UTC), prompt=10, completion=5):
    return UsageRecord(tenant, run, flow, step, iteration, attempt, model, "x.openai.azure.com", prompt, completion,
                       prompt + completion, 2, 1, None if cost is None else Decimal(cost), when)


async def test_ledger_is_idempotent_and_batched(stores):
    tenant = "t-" + uuid.uuid4().hex[:6]
    records = [record(tenant, "r1", iteration=i) for i in range(250)]
    assert await stores.usage.record(records) == 250
    assert await stores.usage.record(records[:120] + [record(tenant, "r1", iteration=999)]) == 1
    stored = await stores.usage.list_for_run(tenant, "r1")
    assert len(stored) == 251
    one = next(r for r in stored if r.iteration == 7)
    assert (one.cost, one.cached_tokens, one.reasoning_tokens, one.recorded_at) == (
        Decimal("0.1"), 2, 1, datetime(2026, 11, 3, 12, tzinfo=UTC))
    assert await stores.usage.list_for_run("other", "r1") == []


async def test_summaries_group_filter_and_sum_exactly(stores):
    a, b = "ta-" + uuid.uuid4().hex[:6], "tb-" + uuid.uuid4().hex[:6]
    d1, d2 = datetime(2026, 10, 30, 23, 59, tzinfo=UTC), datetime(2026, 10, 31, 23, 59, tzinfo=UTC)
    d3 = datetime(2026, 11, 1, 0, 0, tzinfo=UTC)
    await stores.usage.record([
        record(a, "r1", "s1", cost="0.1", when=d1),
        record(a, "r1", "s2", cost="0.2", when=d2, model="gpt-4o"),
        record(a, "r2", "s1", cost=None, when=d2, model="mystery", flow="g"),
        record(a, "r3", "s1", cost="0.000001", when=d3),
        record(b, "r9", "s1", cost="5", when=d2),
    ])
    by_day = await stores.usage_queries.summarize(a, None, None, "day")
    assert [(r.group, r.total_tokens, r.cost, r.runs) for r in by_day] == [
        ("2026-10-30", 15, Decimal("0.1"), 1), ("2026-10-31", 30, Decimal("0.2"), 2),
        ("2026-11-01", 15, Decimal("0.000001"), 1)]
    by_model = {r.group: r for r in await stores.usage_queries.summarize(a, None, None, "model")}
    assert by_model["gpt-4o-mini"].cost == Decimal("0.100001") and by_model["mystery"].cost is None
    assert by_model["gpt-4o-mini"].runs == 2
    by_flow = await stores.usage_queries.summarize(a, date(2026, 10, 31), date(2026, 10, 31), "flow")
    assert [(r.group, r.prompt_tokens, r.completion_tokens) for r in by_flow] == [("f", 10, 5), ("g", 10, 5)]
    by_tenant = {r.group: r for r in await stores.usage_queries.summarize(None, None, None, "tenant")}
    assert by_tenant[a].total_tokens == 60 and by_tenant[b].cost == Decimal("5") and by_tenant[a].runs == 3
    assert await stores.usage_queries.summarize(a, date(2027, 1, 1), None, "day") == []


def lease(tenant, lease_id, tokens, cost="0", period="2026-11", run="r1", expires=None):
    return Lease(tenant, lease_id, run, period, tokens, Decimal(cost),
                 expires or datetime.now(UTC) + timedelta(minutes=11))


async def assert_counters_match(stores, tenant, period):
    """The invariant: used = the ledger's sum, reserved = the leases' sum."""
    counters = await stores.budgets.counters(tenant, period)
    held = [x for x in await stores.bookkeeping.leases(tenant) if x.period == period]
    assert counters.reserved_tokens == sum(x.tokens for x in held)
    assert counters.reserved_cost == sum((x.cost for x in held), Decimal(0))
    return counters


async def test_usage_records_keep_the_api_key_and_summaries_group_by_key(stores):
    a, b = "tk-" + uuid.uuid4().hex[:6], "tl-" + uuid.uuid4().hex[:6]
    key1, key2 = uuid.uuid4().hex[:12], uuid.uuid4().hex[:12]
    await stores.usage.record([
        replace(record(a, "r1", "s1", cost="0.1"), api_key_id=key1),
        replace(record(a, "r1", "s2", cost="0.2"), api_key_id=key1),
        replace(record(a, "r2", "s1", cost="0.4"), api_key_id=key2),
        record(a, "r3", "s1", cost=None),
        replace(record(b, "r9", "s1", cost="5"), api_key_id=key1),
    ])
    assert [r.api_key_id for r in await stores.usage.list_for_run(a, "r1")] == [key1, key1]
    assert [r.api_key_id for r in await stores.usage.list_for_run(a, "r3")] == [None]
    by_key = {r.group: r for r in await stores.usage_queries.summarize(a, None, None, "key")}
    assert set(by_key) == {key1, key2, NO_API_KEY}
    assert (by_key[key1].total_tokens, by_key[key1].cost, by_key[key1].runs) == (30, Decimal("0.3"), 1)
    assert (by_key[key2].cost, by_key[NO_API_KEY].cost, by_key[NO_API_KEY].runs) == (Decimal("0.4"), None, 1)
    everyone = {r.group: r for r in await stores.usage_queries.summarize(None, None, None, "key")}
    assert everyone[key1].cost == Decimal("5.3") and everyone[key1].runs == 2  # the operator's view, all tenants


async def test_usage_records_keep_whether_their_tokens_are_estimated(stores):
    tenant = "te-" + uuid.uuid4().hex[:6]
    assert await stores.usage.record([replace(record(tenant, "r1", "s1"), estimated=True),
                                      record(tenant, "r1", "s2")]) == 2
    # the gateway's path: a charge in a BookBatch
    await stores.bookkeeping.commit(BookBatch(tenant, charges=(
        replace(record(tenant, "r2", "s1", prompt=7, completion=3), estimated=True),)))
    assert [(r.step_id, r.estimated) for r in await stores.usage.list_for_run(tenant, "r1")] == [
        ("s1", True), ("s2", False)]
    assert [r.estimated for r in await stores.usage.list_for_run(tenant, "r2")] == [True]
    # idempotent by key: the same call recorded again (estimated or not) changes nothing
    assert await stores.usage.record([record(tenant, "r1", "s1"), replace(record(tenant, "r1", "s2"),
                                                                           estimated=True)]) == 0
    assert [r.estimated for r in await stores.usage.list_for_run(tenant, "r1")] == [True, False]
    counters = await stores.budgets.counters(tenant, "2026-11")
    assert counters.used_tokens == 15 + 15 + 10  # an estimate is charged like any record


async def test_budget_reserve_charge_release(stores):
    tenant = "t-" + uuid.uuid4().hex[:6]
    book = stores.bookkeeping
    assert await stores.budgets.get_budget(tenant) is None
    limits = Budget(tenant, 100, Decimal("1.50"))
    await stores.budgets.set_budget(limits)
    assert await stores.budgets.get_budget(tenant) == limits
    ok = await book.commit(BookBatch(tenant, reserve=lease(tenant, "a", 60, "0.5"), limits=limits))
    assert ok.reserved and ok.counters.reserved_tokens == 60
    refused = await book.commit(BookBatch(tenant, reserve=lease(tenant, "b", 41), limits=limits))
    assert refused.reserved is False and refused.counters.reserved_tokens == 60
    refused_cost = await book.commit(BookBatch(tenant, reserve=lease(tenant, "c", 1, "1.01"), limits=limits))
    assert refused_cost.reserved is False
    assert [x.lease_id for x in await book.leases(tenant)] == ["a"]
    # the charge of lease a: its record and the counters move together, and the lease is gone
    charge = record(tenant, "r1", cost="0.2", when=datetime(2026, 11, 3, tzinfo=UTC), prompt=20, completion=5)
    await book.commit(BookBatch(tenant, charges=(charge,), released=("a",)))
    after = await assert_counters_match(stores, tenant, "2026-11")
    assert (after.reserved_tokens, after.used_tokens, after.reserved_cost, after.used_cost) == (
        0, 25, Decimal("0"), Decimal("0.2"))
    # replaying the same charge changes nothing
    await book.commit(BookBatch(tenant, charges=(charge,), released=("a",)))
    assert (await stores.budgets.counters(tenant, "2026-11")).used_tokens == 25
    assert len(await stores.usage.list_for_run(tenant, "r1")) == 1
    # a reservation replayed is held once; releasing it frees it
    for _ in range(2):
        assert (await book.commit(BookBatch(tenant, reserve=lease(tenant, "d", 75), limits=limits))).reserved
    assert (await stores.budgets.counters(tenant, "2026-11")).reserved_tokens == 75
    await book.commit(BookBatch(tenant, released=("d",)))
    released = await assert_counters_match(stores, tenant, "2026-11")
    assert (released.reserved_tokens, released.used_tokens) == (0, 25)
    assert (await stores.budgets.counters(tenant, "2026-12")).used_tokens == 0
    unlimited = await book.commit(BookBatch(tenant, reserve=lease(tenant, "e", 10**9, "1000000", "2026-12")))
    assert unlimited.reserved


async def test_a_run_is_created_reserved_charged_and_finished_in_two_batches(stores):
    tenant = "t-" + uuid.uuid4().hex[:6]
    run = RunRecord(run_id=uuid.uuid4().hex, tenant_id=tenant, flow_id="f", flow_hash="h", trigger="http",
                    status="running", inputs={"x": 1})
    limits = Budget(tenant, 1000, None)
    first = await stores.bookkeeping.commit(BookBatch(tenant, create_run=run, limits=limits,
                                                      reserve=lease(tenant, "l1", 300, run=run.run_id)))
    assert (first.created, first.reserved) == (True, True)
    assert (await stores.runs.get(tenant, run.run_id)).status == "running"
    # a second creation of the same run id stops its whole batch: no second lease
    again = await stores.bookkeeping.commit(BookBatch(tenant, create_run=run, reserve=lease(tenant, "l2", 300),
                                                      limits=limits))
    assert again.created is False
    assert [x.lease_id for x in await stores.bookkeeping.leases(tenant)] == ["l1"]
    # the lease of a call that failed is released by finishing the run, with the charge of the served one
    await stores.bookkeeping.commit(BookBatch(tenant, reserve=lease(tenant, "l3", 100, run=run.run_id), limits=limits))
    served = record(tenant, run.run_id, when=datetime.now(UTC))
    run.status, run.outputs = "succeeded", {"answer": 42}
    await stores.bookkeeping.commit(BookBatch(tenant, charges=(served,), released=("l1",), finish_run=run))
    stored = await stores.runs.get(tenant, run.run_id)
    assert (stored.status, stored.outputs) == ("succeeded", {"answer": 42})
    assert await stores.bookkeeping.leases(tenant) == []
    counters = await assert_counters_match(stores, tenant, period_of(datetime.now(UTC)))
    assert (counters.used_tokens, counters.reserved_tokens) == (15, 0)


async def test_charges_booked_one_at_a_time_sum_as_one_batch_does(stores):
    """A run books one record per model call (PostgreSQL takes a path of its own for a batch of one): the read
    models and counters must come out exactly as for the same records written in one batch, replays included."""
    one_by_one, batched = "t1-" + uuid.uuid4().hex[:6], "tb-" + uuid.uuid4().hex[:6]
    d1, d2 = datetime(2026, 11, 3, 12, tzinfo=UTC), datetime(2026, 11, 4, 9, tzinfo=UTC)

    def records(tenant):
        return [record(tenant, "r1", "s1", cost="0.1", when=d1), record(tenant, "r1", "s2", cost=None, when=d1),
                record(tenant, "r2", "s1", cost="0.25", when=d1, model="gpt-4o"),
                record(tenant, "r2", "s1", attempt=2, cost="0.05", when=d2, prompt=100, completion=1)]

    for charge in records(one_by_one) + records(one_by_one)[:2]:  # the last two are replays: counted once
        await stores.bookkeeping.commit(BookBatch(one_by_one, charges=(charge,)))
    await stores.usage.record(records(batched))
    for group_by in ("day", "model", "flow"):
        got, want = [await stores.usage_queries.summarize(t, None, None, group_by) for t in (one_by_one, batched)]
        assert [(r.group, r.prompt_tokens, r.completion_tokens, r.total_tokens, r.cost, r.runs) for r in got] == [
            (r.group, r.prompt_tokens, r.completion_tokens, r.total_tokens, r.cost, r.runs) for r in want]
    got, want = [await stores.budgets.counters(t, "2026-11") for t in (one_by_one, batched)]
    assert (got.used_tokens, got.used_cost) == (want.used_tokens, want.used_cost) == (146, Decimal("0.4"))


async def test_finishing_a_run_that_reserved_releases_its_leases(stores):
    """`leases_held` is False only from a run that never reserved; by default finishing a run frees its leases."""
    tenant = "t-" + uuid.uuid4().hex[:6]
    run = RunRecord(run_id=uuid.uuid4().hex, tenant_id=tenant, flow_id="f", flow_hash="h", trigger="http",
                    status="running")
    await stores.bookkeeping.commit(BookBatch(tenant, create_run=run, reserve=lease(tenant, "l1", 30, run=run.run_id)))
    other = RunRecord(run_id=uuid.uuid4().hex, tenant_id=tenant, flow_id="f", flow_hash="h", trigger="http",
                      status="running")
    await stores.bookkeeping.commit(BookBatch(tenant, create_run=other))
    other.status = "succeeded"
    await stores.bookkeeping.commit(BookBatch(tenant, finish_run=other, leases_held=False))
    assert [x.lease_id for x in await stores.bookkeeping.leases(tenant)] == ["l1"]
    run.status = "failed"
    await stores.bookkeeping.commit(BookBatch(tenant, finish_run=run))
    assert await stores.bookkeeping.leases(tenant) == []
    assert (await assert_counters_match(stores, tenant, "2026-11")).reserved_tokens == 0
    assert (await stores.runs.get(tenant, other.run_id)).status == "succeeded"


async def test_the_sweep_releases_expired_leases_once(stores):
    tenant, other = "t-" + uuid.uuid4().hex[:6], "u-" + uuid.uuid4().hex[:6]
    for t in (tenant, other):
        await stores.tenants.add(Tenant(t, t))
    past = datetime.now(UTC) - timedelta(minutes=1)
    await stores.bookkeeping.commit(BookBatch(tenant, reserve=lease(tenant, "old", 40, expires=past)))
    await stores.bookkeeping.commit(BookBatch(other, reserve=lease(other, "old", 50, expires=past)))
    await stores.bookkeeping.commit(BookBatch(tenant, reserve=lease(tenant, "live", 7)))
    assert await stores.bookkeeping.release_expired(datetime.now(UTC)) >= 2
    assert [x.lease_id for x in await stores.bookkeeping.leases(tenant)] == ["live"]
    assert await stores.bookkeeping.leases(other) == []
    assert (await assert_counters_match(stores, tenant, "2026-11")).reserved_tokens == 7
    # the call whose lease was swept still charges what it served, without subtracting the lease twice
    await stores.bookkeeping.commit(BookBatch(tenant, charges=(record(tenant, "r1"),), released=("old",)))
    counters = await assert_counters_match(stores, tenant, "2026-11")
    assert (counters.reserved_tokens, counters.used_tokens) == (7, 15)


async def test_bulk_records_move_the_used_counters_too(stores):
    tenant = "t-" + uuid.uuid4().hex[:6]
    await stores.usage.record([record(tenant, "r1", iteration=i) for i in range(3)]
                              + [record(tenant, "r2", when=datetime(2026, 12, 1, tzinfo=UTC))])
    assert (await stores.budgets.counters(tenant, "2026-11")).used_tokens == 45
    assert (await stores.budgets.counters(tenant, "2026-11")).used_cost == Decimal("0.3")
    assert (await stores.budgets.counters(tenant, "2026-12")).used_tokens == 15


async def test_concurrent_reservations_never_exceed_the_limit(stores):
    tenant = "t-" + uuid.uuid4().hex[:6]
    limits = Budget(tenant, 100, None)
    results = await asyncio.gather(*[stores.bookkeeping.commit(BookBatch(tenant, reserve=lease(tenant, f"l{i}", 30),
                                                                         limits=limits)) for i in range(20)])
    assert sum(bool(r.reserved) for r in results) == 3
    counters = await assert_counters_match(stores, tenant, "2026-11")
    assert counters.reserved_tokens == 90


async def test_schedules(stores):
    a, b = "ta-" + uuid.uuid4().hex[:6], "tb-" + uuid.uuid4().hex[:6]
    s1 = Schedule("s1-" + a, a, "support-reply", "*/5 * * * *", {"ticket": "x"})
    s2 = Schedule("s2-" + b, b, "triage-batch", "0 * * * *", {}, enabled=False)
    await stores.schedules.add(s1)
    await stores.schedules.add(s2)
    with pytest.raises(AlreadyExists):
        await stores.schedules.add(s1)
    got = await stores.schedules.get(s1.id)
    assert (got.tenant_id, got.cron, got.inputs, got.enabled) == (a, "*/5 * * * *", {"ticket": "x"}, True)
    assert [s.id for s in await stores.schedules.list(b)] == [s2.id]
    assert not (await stores.schedules.get(s2.id)).enabled
    mine = [s.id for s in await stores.schedules.list() if s.tenant_id in (a, b)]
    assert mine == [s1.id, s2.id]
    assert await stores.schedules.remove(s1.id) is True and await stores.schedules.remove(s1.id) is False
    assert await stores.schedules.get(s1.id) is None


async def test_replay_guard_and_health(stores):
    tenant = "t-" + uuid.uuid4().hex[:6]
    later = datetime.now(UTC) + timedelta(minutes=10)
    results = await asyncio.gather(*[stores.replay.first_use(tenant, "sig-1", later) for _ in range(8)])
    assert results.count(True) == 1
    assert await stores.replay.first_use("other-" + tenant, "sig-1", later) is True
    assert await stores.replay.first_use(tenant, "sig-2", later) is True
    await stores.health.ping()


HOSTILE = ['=HYPERLINK("http://evil.example","x")', "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A9)", "\tTAB", "\rCR"]


@pytest.mark.parametrize("group_by", ["model", "flow", "tenant"])
async def test_every_csv_export_neutralises_formula_cells(stores, group_by):
    """The tenant's export, the operator's (all tenants) and the CLI all write UsageService summaries with to_csv."""
    tenant = "=t-" + uuid.uuid4().hex[:6] if group_by == "tenant" else "t-" + uuid.uuid4().hex[:6]
    await stores.usage.record([record(tenant, f"r{i}", model=text, flow=text) for i, text in enumerate(HOSTILE)])
    service = UsageService(stores.usage_queries, stores.budgets)
    scope = None if group_by == "tenant" else tenant
    text = to_csv(await service.summary(UsageQuery(scope, None, None, group_by)))
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert all(not cell.startswith(("=", "+", "-", "@", "\t", "\r")) for row in rows for cell in row)
    cells = [row[0] for row in rows[1:]]
    if group_by == "tenant":
        assert "'" + tenant in cells
    else:
        assert {"'" + text.replace("\r", " ") for text in HOSTILE} <= set(cells)
        assert len(rows) == len(text.splitlines()) == len(HOSTILE) + 2  # header and total; no cell split a row
