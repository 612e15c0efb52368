"""Signed webhooks, the flow-runs queue (duplicates, malformed messages) and the schedules timer."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from shared.services.queue_worker import RUN_TIMEOUT, MessageRejected, RunInProgress
from shared.services.schedules import scheduled_run_id


def signed(secret: str, body: bytes, stamp: int | None = None) -> dict[str, str]:
    stamp = int(time.time()) if stamp is None else stamp
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {"x-tenantflow-signature": f"t={stamp},v1={digest}", "content-type": "application/json"}


async def webhook(app, tenant, headers, body):
    return await app.http("webhook", "POST", f"hooks/{tenant}/ticket-webhook", body, headers,
                          route={"tenant": tenant, "flow": "ticket-webhook"})


async def test_signed_webhook_runs_with_the_body_as_payload(app):
    await app.tenant("contoso")
    secret = (await app.svc.tenants.webhook_secret("contoso")).reveal()
    body = json.dumps({"id": "T-1", "subject": "Refund", "body": "Please refund order 7"}).encode()
    response = await webhook(app, "contoso", signed(secret, body), body)
    assert response.status_code == 200, response.get_body()
    run = json.loads(response.get_body())
    assert run["status"] == "succeeded" and run["outputs"]["ticket_id"] == "T-1"
    stored = await app.svc.stores.runs.get("contoso", run["run_id"])
    assert stored.trigger == "webhook" and stored.inputs["payload"]["subject"] == "Refund"


async def test_forged_stale_and_replayed_webhooks_are_401_and_make_no_run(app):
    await app.tenant("contoso")
    secret = (await app.svc.tenants.webhook_secret("contoso")).reveal()
    body = json.dumps({"id": "T-2"}).encode()
    good = signed(secret, body)
    assert (await webhook(app, "contoso", good, body)).status_code == 200
    cases = {
        "replayed": good,
        "forged": signed("not-the-secret", body),
        "stale": signed(secret, body, int(time.time()) - 301),
        "future": signed(secret, body, int(time.time()) + 301),
        "tampered body": signed(secret, body + b" "),
        "missing": {},
        "malformed": {"x-tenantflow-signature": "v1=abc"},
    }
    for name, headers in cases.items():
        response = await webhook(app, "contoso", headers, body)
        assert response.status_code == 401, name
        assert json.loads(response.get_body())["status"] == 401
    unknown = await webhook(app, "nobody", signed(secret, body), body)
    assert unknown.status_code == 401
    assert len(await app.svc.stores.runs.list("contoso")) == 1


async def test_thousand_copies_of_a_message_make_one_run(app_on_every_backend):
    app = app_on_every_backend
    await app.tenant("contoso")
    run_id = uuid.uuid4().hex
    message = json.dumps({"run_id": run_id, "tenant": "contoso", "flow": "support-reply",
                          "inputs": {"ticket": "deliver me once"}, "trigger": "queue"})
    encoded = base64.b64encode(message.encode()).decode()
    before = app.emulator.stats()["requests"]
    copies = [message if i % 2 else encoded for i in range(1000)]
    outcomes = []
    for start in range(0, len(copies), 100):  # the host's batches; a copy that meets the run in progress retries
        outcomes += await asyncio.gather(*[app.deliver(copy, dequeue_count=1 + i % 5)
                                           for i, copy in enumerate(copies[start:start + 100])])
    assert outcomes.count("done") == 1000  # none poisoned: duplicates are not failures
    run = await app.svc.stores.runs.get("contoso", run_id)
    assert run.status == "succeeded" and run.trigger == "queue"
    assert app.emulator.stats()["requests"] - before == 1
    records = await app.svc.stores.usage.list_for_run("contoso", run_id)
    assert len(records) == 1 and records[0].total_tokens == run.usage["total_tokens"]


@pytest.mark.parametrize("message,reason", [
    ("{not json", "neither JSON nor base64"),
    (base64.b64encode(b"\xff\xfe").decode(), "neither JSON nor base64"),
    (json.dumps(["a list"]), "JSON object"),
    (json.dumps({"tenant": "contoso", "flow": "support-reply", "run_id": "r-missing-inputs"}),
     "inputs.ticket: required input missing"),
    (json.dumps({"tenant": "contoso", "flow": "no-such-flow", "run_id": "r-unknown-flow"}), "unknown flow"),
    (json.dumps({"tenant": "nobody", "flow": "support-reply", "run_id": "r-unknown-tenant"}), "unknown tenant"),
    (json.dumps({"tenant": "contoso", "flow": "support-reply", "run_id": "r-bad-type",
                 "inputs": {"ticket": 5}}), "must be string"),
    (json.dumps({"tenant": "contoso", "flow": "support-reply"}), "missing run_id"),
])
async def test_malformed_messages_make_no_model_call_and_are_recorded(app, message, reason):
    await app.tenant("contoso")
    before = app.emulator.stats()["requests"]
    with pytest.raises(MessageRejected) as caught:
        await app.queue(message, dequeue_count=5)
    assert reason in str(caught.value)
    assert app.emulator.stats()["requests"] == before
    try:
        decoded = json.loads(message)
    except json.JSONDecodeError:
        decoded = None
    if isinstance(decoded, dict) and decoded.get("tenant") == "contoso" and decoded.get("run_id"):
        run = await app.svc.stores.runs.get("contoso", decoded["run_id"])
        assert run.status == "rejected" and reason in run.error


async def test_a_copy_meeting_a_live_run_retries_and_a_dead_run_is_marked_interrupted(app_on_every_backend):
    app = app_on_every_backend
    await app.tenant("contoso")
    run_id = uuid.uuid4().hex
    message = json.dumps({"run_id": run_id, "tenant": "contoso", "flow": "support-reply",
                          "inputs": {"ticket": "crash me"}})
    prepared = await app.svc.runs.prepare("contoso", "support-reply", {"ticket": "crash me"}, "queue",
                                          run_id=run_id, status="queued")
    assert prepared.created and await app.svc.runs.claim("contoso", run_id)  # a worker claimed it, then died
    before = app.emulator.stats()["requests"]
    with pytest.raises(RunInProgress):  # it may still be alive: the host retries this copy later
        await app.queue(message, dequeue_count=2)
    await app.queue(message, dequeue_count=5)  # the last attempt leaves a live run alone instead of poisoning
    assert (await app.svc.stores.runs.get("contoso", run_id)).status == "running"
    stale = await app.svc.stores.runs.get("contoso", run_id)
    stale.started_at = datetime.now(UTC) - RUN_TIMEOUT - timedelta(seconds=1)  # older than any invocation lives
    await app.svc.stores.runs.save(stale)
    await asyncio.gather(app.queue(message, dequeue_count=3), app.queue(message, dequeue_count=3))
    run = await app.svc.stores.runs.get("contoso", run_id)
    assert run.status == "failed" and run.error.startswith("interrupted:") and run.finished_at is not None
    assert app.emulator.stats()["requests"] == before  # never re-run: no second model call
    await app.queue(message)  # later copies see a finished run
    assert (await app.svc.stores.runs.get("contoso", run_id)).status == "failed"


async def test_two_timer_firings_in_one_minute_make_one_run_per_due_schedule(app):
    await app.tenant("contoso")
    await app.tenant("fabrikam")
    every = await app.svc.schedules.add("contoso", "support-reply", "* * * * *", {"ticket": "hourly check"})
    other = await app.svc.schedules.add("fabrikam", "support-reply", "* * * * *", {"ticket": "ping"})
    never = await app.svc.schedules.add("fabrikam", "support-reply", "0 0 29 2 *", {"ticket": "leap"})
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    app.clock.set(minute + timedelta(seconds=59))  # both firings fall in this minute, however long they take
    await asyncio.gather(app.timer(), app.timer())
    messages = await app.queued_messages()
    expected = {scheduled_run_id(every.id, minute), scheduled_run_id(other.id, minute)}
    assert {m["run_id"] for m in messages} == expected
    assert scheduled_run_id(never.id, minute) not in {m["run_id"] for m in messages}
    for m in messages:
        await app.queue(json.dumps(m))
        await app.queue(json.dumps(m))
    runs = await app.svc.stores.runs.list("contoso") + await app.svc.stores.runs.list("fabrikam")
    assert sorted(r.run_id for r in runs) == sorted(expected)
    assert all(r.status == "succeeded" and r.trigger == "timer" for r in runs)


async def test_timer_sweeps_runs_whose_worker_stopped(app):
    from shared.storage.models import RunRecord

    await app.tenant("contoso")
    stuck = RunRecord(run_id=uuid.uuid4().hex, tenant_id="contoso", flow_id="support-reply", flow_hash="h",
                      trigger="http", status="running", inputs={"ticket": "x"},
                      started_at=datetime.now(UTC) - RUN_TIMEOUT - timedelta(minutes=1))
    live = RunRecord(run_id=uuid.uuid4().hex, tenant_id="contoso", flow_id="support-reply", flow_hash="h",
                     trigger="http", status="running", inputs={"ticket": "y"}, started_at=datetime.now(UTC))
    await app.svc.stores.runs.create(stuck)
    await app.svc.stores.runs.create(live)
    before = app.emulator.stats()["requests"]
    await app.timer()
    swept = await app.svc.stores.runs.get("contoso", stuck.run_id)
    assert swept.status == "failed" and swept.error.startswith("interrupted") and swept.finished_at is not None
    assert (await app.svc.stores.runs.get("contoso", live.run_id)).status == "running"
    assert app.emulator.stats()["requests"] == before


async def test_a_late_timer_catches_up_the_minutes_it_missed(app):
    from azure.functions.timer import TimerRequest

    await app.tenant("contoso")
    every = await app.svc.schedules.add("contoso", "support-reply", "* * * * *", {"ticket": "tick"})
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    app.clock.set(minute + timedelta(seconds=30))
    last = (minute - timedelta(minutes=4)).isoformat().replace("+00:00", ".0012345+00:00")
    await app.functions["schedules"](TimerRequest(schedule_status={"Last": last}))
    sent = {m["run_id"] for m in await app.queued_messages()}
    assert sent == {scheduled_run_id(every.id, minute - timedelta(minutes=n)) for n in range(4)}
