"""HTTP, queue and timer behaviour in fast unit tests: the registered functions over in-memory stores and run
queue, a fake model, and a clock the test sets. No server, no sleep."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest

from shared.bootstrap import build_services
from shared.functions import runtime
from shared.functions.local_server import registered_functions
from shared.secret import Secret
from shared.services.runs import QUEUED_GIVE_UP, QUEUED_RESEND_AFTER
from shared.settings import Settings
from shared.storage.ports import StoreUnavailable
from tests.backends.fixtures import fresh_encryption_keys
from tests.fakes import FakeModel, ManualClock
from tests.memory.stores import InMemoryRunQueue, InMemoryStores

FUNCTIONS = {f.get_function_name(): f.get_user_function() for f in registered_functions()}
TICKET = {"inputs": {"ticket": "My invoice is wrong"}}
ENDPOINT = "http://127.0.0.1:9"  # never called: the fake model answers


class App:
    def __init__(self, svc, state, queue, clock, model) -> None:
        self.svc, self.state, self.queue, self.clock, self.model = svc, state, queue, clock, model

    async def http(self, name: str, method: str, path: str, body=b"", headers=None, params=None, route=None):
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = func.HttpRequest(method=method, url=f"http://localhost/api/{path}", headers=headers or {},
                                   params=params or {}, route_params=route or {}, body=raw)
        return await FUNCTIONS[name](request)

    async def start(self, key: str, wait: bool = True, idempotency_key: str | None = None):
        headers = {"x-api-key": key, **({"idempotency-key": idempotency_key} if idempotency_key else {})}
        return await self.http("start_run", "POST", "flows/support-reply/runs", TICKET, headers,
                               params={} if wait else {"wait": "false"}, route={"flow": "support-reply"})

    async def tenant(self, tenant_id: str) -> str:
        created = await self.svc.tenants.add(tenant_id)
        await self.svc.credentials.set(tenant_id, "foundry", "azure_openai", endpoint=ENDPOINT, api_key=Secret("k"))
        return created.api_key.reveal()


def base_settings(tmp_path) -> Settings:
    return dataclasses.replace(Settings.from_env({}), sqlite_path=tmp_path / "unused.db", allowed_hosts=("127.0.0.1",),
                               encryption_keys=fresh_encryption_keys())


@pytest.fixture
async def app(tmp_path):
    clock = ManualClock(datetime(2026, 3, 14, 9, 26, 53, tzinfo=UTC))
    stores = InMemoryStores(clock)
    queue, model = InMemoryRunQueue(), FakeModel()
    svc = await build_services(base_settings(tmp_path), stores=stores, queue=queue, clock=clock, model=model)
    runtime.use(svc)
    yield App(svc, stores.state, queue, clock, model)
    runtime.use(None)
    await svc.close()


def body(response):
    return json.loads(response.get_body())


async def test_a_sync_run_answers_the_run_object_and_a_queued_run_is_sent(app):
    key = await app.tenant("contoso")
    ran = await app.start(key)
    assert ran.status_code == 200 and body(ran)["status"] == "succeeded"
    assert body(ran)["outputs"]["reply"] == "re: My invoice is wrong" and len(app.model.requests) == 1
    queued = await app.start(key, wait=False)
    assert queued.status_code == 202 and queued.headers["location"] == f"/api/runs/{body(queued)['run_id']}"
    assert [m["run_id"] for m in app.queue.receive()] == [body(queued)["run_id"]]


async def test_health_reports_each_component(app):
    healthy = await app.http("health", "GET", "health")
    assert healthy.status_code == 200
    assert body(healthy) == {"status": "ok", "components": {"store": {"status": "ok", "backend": "memory"},
                                                            "queue": {"status": "ok"}}}
    app.queue.down = True
    down = await app.http("health", "GET", "health")
    assert down.status_code == 503 and down.headers["retry-after"] == "5"
    assert down.headers["content-type"] == "application/problem+json"
    assert body(down)["components"]["queue"] == {"status": "down", "error": "ConnectionError"}


async def test_a_store_that_is_down_answers_503_problem_details_everywhere(app):
    key = await app.tenant("contoso")
    app.state.unavailable = "SQLite /data/tenantflow.db: disk full"
    for name, method, path, route in (("start_run", "POST", "flows/support-reply/runs", {"flow": "support-reply"}),
                                      ("get_run", "GET", "runs/r1", {"run_id": "r1"}),
                                      ("usage", "GET", "usage", {}), ("dashboard", "GET", "dashboard", {})):
        response = await app.http(name, method, path, TICKET if method == "POST" else b"", {"x-api-key": key},
                                  route=route)
        problem = body(response)
        assert response.status_code == 503 == problem["status"], (name, problem)
        assert response.headers["retry-after"] == "5" and response.headers["content-type"] == "application/problem+json"
        assert problem["detail"] == "SQLite /data/tenantflow.db: disk full; retry later"
    health = await app.http("health", "GET", "health")
    assert health.status_code == 503 and body(health)["components"]["store"]["status"] == "down"
    app.state.unavailable = None
    assert (await app.start(key)).status_code == 200


async def test_the_queue_worker_leaves_the_message_when_the_store_is_down(app):
    from azure.functions.queue import QueueMessage

    await app.tenant("contoso")
    message = json.dumps({"run_id": "r-store-down", "tenant": "contoso", "flow": "support-reply",
                          "inputs": {"ticket": "later"}})
    app.state.unavailable = "PostgreSQL: connection refused to 127.0.0.1:5432"
    with pytest.raises(StoreUnavailable):  # raised: the host delivers the message again
        await FUNCTIONS["flow_runs"](QueueMessage(id="m1", body=message, dequeue_count=1))
    app.state.unavailable = None
    await FUNCTIONS["flow_runs"](QueueMessage(id="m1", body=message, dequeue_count=2))
    assert (await app.svc.stores.runs.get("contoso", "r-store-down")).status == "succeeded"


async def test_runs_left_queued_are_sent_again_by_the_sweep_and_failed_when_too_old(app):
    key = await app.tenant("contoso")
    app.queue.down = True
    refused = await app.start(key, wait=False, idempotency_key="order-1")  # kept queued for a retry
    assert refused.status_code == 503 and refused.headers["retry-after"]
    kept = body(refused)["run_id"]
    assert (await app.svc.stores.runs.get("contoso", kept)).status == "queued"
    app.clock.advance(seconds=QUEUED_RESEND_AFTER.total_seconds() + 1)
    await FUNCTIONS["schedules"](TimerRequest())  # the queue is still down: the run stays queued
    assert app.queue.receive() == [] and (await app.svc.stores.runs.get("contoso", kept)).status == "queued"
    app.queue.down = False
    await FUNCTIONS["schedules"](TimerRequest())
    assert [m["run_id"] for m in app.queue.receive()] == [kept]
    app.queue.down = True
    app.clock.advance(seconds=QUEUED_GIVE_UP.total_seconds())
    await FUNCTIONS["schedules"](TimerRequest())
    failed = await app.svc.stores.runs.get("contoso", kept)
    assert failed.status == "failed" and failed.error.startswith("not delivered")


async def test_the_timer_fires_each_due_schedule_once_per_minute_of_the_injected_clock(app):
    await app.tenant("contoso")
    every = await app.svc.schedules.add("contoso", "support-reply", "* * * * *", {"ticket": "tick"})
    from shared.services.schedules import scheduled_run_id

    minute = app.clock.now().replace(second=0, microsecond=0)
    await FUNCTIONS["schedules"](TimerRequest())
    await FUNCTIONS["schedules"](TimerRequest())  # a second firing in the same minute
    app.clock.advance(minutes=1)
    await FUNCTIONS["schedules"](TimerRequest())
    sent = [m["run_id"] for m in app.queue.receive()]
    assert sent.count(scheduled_run_id(every.id, minute)) == 2  # re-sent while queued: the worker dedupes
    assert set(sent) == {scheduled_run_id(every.id, minute), scheduled_run_id(every.id, minute + timedelta(minutes=1))}


async def test_webhook_stamps_are_checked_against_the_injected_clock(app):
    import hashlib
    import hmac

    await app.tenant("contoso")
    secret = (await app.svc.tenants.webhook_secret("contoso")).reveal()
    payload = b'{"id": "T-1"}'

    def signed(stamp: str) -> dict[str, str]:
        digest = hmac.new(secret.encode(), stamp.encode() + b"." + payload, hashlib.sha256).hexdigest()
        return {"x-tenantflow-signature": f"t={stamp},v1={digest}"}

    now = int(app.clock.now().timestamp())
    cases = {str(now - 301): 401, "²": 401, "9" * 5000: 401, str(now): 200}
    for stamp, status in cases.items():
        response = await app.http("webhook", "POST", "hooks/contoso/ticket-webhook", payload, signed(stamp),
                                  route={"tenant": "contoso", "flow": "ticket-webhook"})
        assert response.status_code == status, (stamp[:20], body(response))


async def test_an_api_key_is_remembered_briefly_and_revoke_and_suspend_apply_at_once(app):
    key = await app.tenant("contoso")
    assert (await app.start(key)).status_code == 200
    before = app.state.operations
    assert (await app.svc.tenants.authenticate(key)).id == "contoso"
    assert app.state.operations == before  # the key and its tenant came from the cache: no store call
    await app.svc.tenants.suspend("contoso")
    assert (await app.start(key)).status_code == 403
    await app.svc.tenants.activate("contoso")
    assert (await app.start(key)).status_code == 200
    key_id = key.split("_")[1]
    assert await app.svc.tenants.revoke_key("contoso", key_id)
    assert (await app.start(key)).status_code == 401


async def test_a_change_made_by_another_instance_is_seen_within_the_cache_ttl(app):
    import asyncio

    from shared.services.tenants import TenantService

    key = await app.tenant("contoso")
    this = TenantService(app.svc.stores.tenants, app.svc.box, key_cache_ttl=0.05)
    other = TenantService(app.svc.stores.tenants, app.svc.box)  # another instance, sharing the store
    assert (await this.authenticate(key)).status == "active"
    await other.suspend("contoso")
    assert (await this.authenticate(key)).status == "active"  # still cached here
    await asyncio.sleep(0.06)
    assert (await this.authenticate(key)).status == "suspended"


async def test_with_the_api_key_cache_off_a_change_on_another_instance_is_seen_at_once(app, tmp_path, monkeypatch):
    from shared.services.tenants import TenantService
    from shared.settings import Settings

    monkeypatch.setenv("TENANTFLOW_API_KEY_CACHE_TTL", "0")
    assert Settings.from_env().api_key_cache_ttl == 0
    key = await app.tenant("contoso")
    this = TenantService(app.svc.stores.tenants, app.svc.box, key_cache_ttl=0)
    other = TenantService(app.svc.stores.tenants, app.svc.box)
    assert (await this.authenticate(key)).status == "active"
    await other.revoke_key("contoso", key.split("_")[1])
    assert await this.authenticate(key) is None


def test_the_catalog_looks_at_a_cached_flow_file_at_most_every_recheck_interval(tmp_path):
    import os

    from shared.services.catalog import FlowCatalog

    source = (base_settings(tmp_path).flows_dir / "grounded-answer.yaml").read_text()
    path = tmp_path / "flow.yaml"
    path.write_text(source)
    catalog = FlowCatalog(tmp_path, {"default"}, recheck_seconds=3600)
    first = catalog.load_reference(str(path))
    path.write_text(source.replace("grounded-answer", "renamed-answer"))
    os.utime(path, (1, 1))
    assert catalog.load_reference(str(path)) is first  # no stat within the interval
    assert FlowCatalog(tmp_path, {"default"}, recheck_seconds=0).load_reference(str(path)).id == "renamed-answer"


async def test_a_bad_setting_at_start_up_is_a_503_naming_the_setting_and_no_value(monkeypatch):
    monkeypatch.setenv("TENANTFLOW_STORE", "mongodb-with-password-hunter2")
    runtime.use(None)
    response = await FUNCTIONS["health"](func.HttpRequest("GET", "http://localhost/api/health", body=b""))
    problem = body(response)
    assert response.status_code == 503 and response.headers["content-type"] == "application/problem+json"
    assert problem["detail"] == "the app setting TENANTFLOW_STORE is missing or malformed"
    assert "hunter2" not in response.get_body().decode()
    assert runtime.services_instance is None  # nothing half-built is kept: the next request tries again


@pytest.mark.parametrize("name, route, raw, status, field", [
    ("start_run", {"flow": "support-reply"}, b'{"inputs": {"ticket": ' + b"[" * 10_000 + b"]" * 10_000 + b"}}", 400,
     "body"),
    ("start_run", {"flow": "support-reply"}, b'{"inputs": {"ticket": ' + b"9" * 5_000 + b"}}", 400, "body"),
    ("start_run", {"flow": "support-reply"}, b'{"inputs": {"\\ud800": "x"}}', 400, "body"),
    ("start_run", {"flow": "support\x00reply"}, b"{}", 404, "flow"),
    ("start_run", {"flow": "x" * 10_000}, b"{}", 404, "flow"),
    ("get_run", {"run_id": "run\x00id"}, b"", 404, "run_id"),
])
async def test_malformed_requests_are_4xx_problem_details(app, name, route, raw, status, field):
    """Issue 11 §5: cheap malformed input is refused with problem details naming the field, never a 500."""
    key = await app.tenant("contoso")
    response = await app.http(name, "POST" if name == "start_run" else "GET", "x", raw, {"x-api-key": key},
                              route=route)
    problem = body(response)
    assert response.status_code == status and response.headers["content-type"] == "application/problem+json"
    assert problem["status"] == status and field in json.dumps(problem.get("errors", problem["detail"]))
    assert app.model.requests == []


@pytest.mark.parametrize("stamp", ["²", "9" * 5_000, ""])
async def test_malformed_webhook_stamps_are_401(app, stamp):
    await app.tenant("contoso")
    response = await app.http("webhook", "POST", "hooks/contoso/ticket-webhook", b"{}",
                              {"x-tenantflow-signature": f"t={stamp},v1={'a' * 64}"},
                              route={"tenant": "contoso", "flow": "ticket-webhook"})
    assert response.status_code == 401 and body(response)["status"] == 401
    tenant_nul = await app.http("webhook", "POST", "hooks/x/y", b"{}", {}, route={"tenant": "con\x00toso",
                                                                                  "flow": "ticket-webhook"})
    assert tenant_nul.status_code == 404


async def test_a_sync_request_for_a_flow_longer_than_the_sync_limit_is_queued(tmp_path):
    """Issue 12: support-reply's worst case (one model call: 3 × 45 s + 2 × 30 s) is over a 100 s sync limit, so
    a sync request answers 202 + Location and the run goes to the queue; under the limit it runs at once."""
    for limit, expected in ((100.0, 202), (200.0, 200)):
        clock = ManualClock(datetime(2026, 3, 14, 9, 26, 53, tzinfo=UTC))
        stores, queue, model = InMemoryStores(clock), InMemoryRunQueue(), FakeModel()
        settings = dataclasses.replace(base_settings(tmp_path), sync_limit_seconds=limit)
        svc = await build_services(settings, stores=stores, queue=queue, clock=clock, model=model)
        runtime.use(svc)
        try:
            app = App(svc, stores.state, queue, clock, model)
            response = await app.start(await app.tenant("contoso"))
            assert response.status_code == expected, response.get_body()
            if expected == 202:
                assert response.headers["location"] == f"/api/runs/{body(response)['run_id']}"
                assert [m["run_id"] for m in queue.messages] == [body(response)["run_id"]] and model.requests == []
            else:
                assert queue.messages == [] and len(model.requests) == 1
        finally:
            runtime.use(None)
            await svc.close()
