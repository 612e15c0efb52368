"""Contract: RunStore, on every backend."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from shared.storage.models import RunRecord, StepRecord
from shared.storage.ports import NotFound


def new_run(tenant, status="queued", **over):
    fields = dict(run_id=uuid.uuid4().hex, tenant_id=tenant, flow_id="f", flow_hash="h" * 64, trigger="http",
                  status=status, inputs={"q": "é ✓", "n": [1, 2]})
    fields.update(over)
    return RunRecord(**fields)


async def test_create_is_insert_if_absent_and_get_is_tenant_scoped(stores):
    run = new_run("ta")
    assert await stores.runs.create(run) is True
    assert await stores.runs.create(new_run("ta", run_id=run.run_id, flow_id="other")) is False
    got = await stores.runs.get("ta", run.run_id)
    assert (got.flow_id, got.inputs, got.status) == ("f", {"q": "é ✓", "n": [1, 2]}, "queued")
    assert await stores.runs.get("tb", run.run_id) is None


async def test_transition_has_exactly_one_winner(stores):
    run = new_run("ta")
    await stores.runs.create(run)
    results = await asyncio.gather(*[stores.runs.transition("ta", run.run_id, ("queued",), "running")
                                     for _ in range(12)])
    assert results.count(True) == 1
    got = await stores.runs.get("ta", run.run_id)
    assert got.status == "running" and got.started_at is not None
    assert await stores.runs.transition("tb", run.run_id, ("running",), "failed") is False
    assert await stores.runs.transition("ta", "missing", ("queued",), "running") is False


async def test_save_round_trips_the_whole_record(stores):
    run = new_run("ta", status="running")
    await stores.runs.create(run)
    run.status = "succeeded"
    run.outputs = {"reply": "x" * 100_000}
    run.steps = [StepRecord("draft", "chat_completion", "succeeded", 1.5, {"total_tokens": 3}, None, 0)]
    run.usage = {"total_tokens": 3, "cost": "0.000001"}
    run.finished_at = run.created_at
    await stores.runs.save(run)
    got = await stores.runs.get("ta", run.run_id)
    assert got.status == "succeeded" and got.outputs == run.outputs and got.steps == run.steps
    assert got.usage == run.usage and got.finished_at == run.finished_at
    with pytest.raises(NotFound):
        await stores.runs.save(new_run("ta"))


async def test_idempotency_key_lookup_and_listing(stores):
    tenant = "t-" + uuid.uuid4().hex[:6]
    first = new_run(tenant, idempotency_key="k1", request_hash="abc")
    await stores.runs.create(first)
    for _ in range(3):
        await stores.runs.create(new_run(tenant))
    await stores.runs.create(new_run("other", idempotency_key="k1"))
    found = await stores.runs.find_by_idempotency_key(tenant, "k1")
    assert found.run_id == first.run_id and found.request_hash == "abc"
    assert await stores.runs.find_by_idempotency_key(tenant, "k2") is None
    listed = await stores.runs.list(tenant, limit=10)
    assert len(listed) == 4 and {r.tenant_id for r in listed} == {tenant}
    assert [r.created_at for r in listed] == sorted((r.created_at for r in listed), reverse=True)


async def test_stale_running_runs_are_listed_across_tenants(stores):
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    old_a = new_run("ta-stale", status="running", started_at=now - timedelta(minutes=30))
    old_b = new_run("tb-stale", status="running", started_at=now - timedelta(minutes=20))
    fresh = new_run("ta-stale", status="running", started_at=now - timedelta(seconds=5))
    done = new_run("ta-stale", status="succeeded", started_at=now - timedelta(hours=1))
    for run in (old_a, old_b, fresh, done):
        await stores.runs.create(run)
    found = [r.run_id for r in await stores.runs.list_stale_running(now - timedelta(minutes=15))
             if r.tenant_id in ("ta-stale", "tb-stale")]
    assert found == [old_a.run_id, old_b.run_id]
    assert len(await stores.runs.list_stale_running(now - timedelta(minutes=15), limit=1)) == 1


async def test_stale_queued_runs_are_listed_across_tenants_oldest_first(stores):
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    old_a = new_run("ta-queued", created_at=now - timedelta(minutes=30))
    old_b = new_run("tb-queued", created_at=now - timedelta(minutes=20))
    fresh = new_run("ta-queued", created_at=now - timedelta(seconds=5))
    running = new_run("ta-queued", status="running", created_at=now - timedelta(hours=1),
                      started_at=now - timedelta(hours=1))
    for run in (old_b, old_a, fresh, running):
        await stores.runs.create(run)
    found = [r.run_id for r in await stores.runs.list_stale_queued(now - timedelta(minutes=15))
             if r.tenant_id in ("ta-queued", "tb-queued")]
    assert found == [old_a.run_id, old_b.run_id]
    assert len(await stores.runs.list_stale_queued(now - timedelta(minutes=15), limit=1)) == 1
    assert await stores.runs.transition("ta-queued", old_a.run_id, ("queued",), "running")
    after = [r.run_id for r in await stores.runs.list_stale_queued(now - timedelta(minutes=15))
             if r.tenant_id in ("ta-queued", "tb-queued")]
    assert after == [old_b.run_id]
