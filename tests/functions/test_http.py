"""HTTP functions: runs, run lookup, errors as problem details, idempotency, health."""

from __future__ import annotations

import json

from shared.services.run_queue import RunQueue

TICKET = {"inputs": {"ticket": "My invoice is wrong"}}


class DownQueue(RunQueue):
    """A run queue that cannot be reached; its error text holds a connection string, as real ones may."""

    def __init__(self) -> None:
        self.attempts = 0

    async def send(self, message):
        self.attempts += 1
        raise ConnectionError("cannot reach QueueEndpoint=http://127.0.0.1:9;AccountKey=c2VjcmV0")

    async def ping(self):
        raise ConnectionError("AccountKey=c2VjcmV0")


def body(response):
    return json.loads(response.get_body())


async def test_sync_run_answers_the_run_object(app):
    key = await app.tenant("contoso")
    response = await app.http("start_run", "POST", "flows/support-reply/runs", TICKET, {"x-api-key": key},
                              route={"flow": "support-reply"})
    assert response.status_code == 200, response.get_body()
    run = body(response)
    assert (run["tenant"], run["flow"], run["status"], run["error"]) == ("contoso", "support-reply", "succeeded", None)
    assert run["outputs"]["reply"].startswith("[gpt-4o-mini] Re: My invoice is wrong")
    assert run["usage"]["total_tokens"] > 0 and [s["id"] for s in run["steps"]] == ["creds", "connect", "draft"]
    assert response.headers["location"] == f"/api/runs/{run['run_id']}"
    fetched = await app.http("get_run", "GET", f"runs/{run['run_id']}", headers={"x-api-key": key},
                             route={"run_id": run["run_id"]})
    assert fetched.status_code == 200 and body(fetched)["outputs"] == run["outputs"]


async def test_async_run_is_queued_with_location(app):
    key = await app.tenant("contoso")
    response = await app.http("start_run", "POST", "flows/support-reply/runs", TICKET, {"x-api-key": key},
                              params={"wait": "false"}, route={"flow": "support-reply"})
    assert response.status_code == 202
    run = body(response)
    assert run["status"] == "queued" and response.headers["location"] == f"/api/runs/{run['run_id']}"
    messages = await app.queued_messages()
    assert [m["run_id"] for m in messages] == [run["run_id"]]
    assert messages[0]["tenant"] == "contoso" and messages[0]["inputs"]["ticket"] == TICKET["inputs"]["ticket"]
    await app.queue(json.dumps(messages[0]))
    done = await app.svc.stores.runs.get("contoso", run["run_id"])
    assert done.status == "succeeded" and done.trigger == "http"


async def test_another_tenants_run_is_404(app):
    key_a = await app.tenant("tenant-a")
    key_b = await app.tenant("tenant-b")
    run = body(await app.http("start_run", "POST", "flows/support-reply/runs", TICKET, {"x-api-key": key_a},
                              route={"flow": "support-reply"}))
    response = await app.http("get_run", "GET", f"runs/{run['run_id']}", headers={"x-api-key": key_b},
                              route={"run_id": run["run_id"]})
    assert response.status_code == 404
    assert body(response)["status"] == 404 and response.headers["content-type"] == "application/problem+json"


async def test_errors_are_problem_details(app):
    key = await app.tenant("contoso")
    route = {"flow": "support-reply"}
    cases = [
        ({}, TICKET, route, 401, None),
        ({"x-api-key": "tf_000000000000_" + "x" * 40}, TICKET, route, 401, None),
        ({"x-api-key": key}, b"{not json", route, 400, None),
        ({"x-api-key": key}, {"inputs": {}}, route, 422, "inputs.ticket"),
        ({"x-api-key": key}, {"inputs": {"ticket": 5}}, route, 422, "inputs.ticket"),
        ({"x-api-key": key}, {"inputs": [], "tenant": "other"}, route, 422, "tenant"),
        ({"x-api-key": key}, TICKET, {"flow": "no-such-flow"}, 404, None),
        ({"x-api-key": key}, b"{" + b" " * (1024 * 1024) + b"}", route, 413, None),
    ]
    for headers, payload, route_params, status, field in cases:
        response = await app.http("start_run", "POST", "flows/x/runs", payload, headers, route=route_params)
        problem = body(response)
        assert response.status_code == status == problem["status"], (status, problem)
        assert {"type", "title", "status", "detail"} <= set(problem)
        assert "Traceback" not in response.get_body().decode()
        if field:
            assert field in [e["field"] for e in problem["errors"]]
    await app.svc.tenants.suspend("contoso")
    response = await app.http("start_run", "POST", "flows/support-reply/runs", TICKET, {"x-api-key": key},
                              route=route)
    assert response.status_code == 403 and body(response)["title"] == "Tenant suspended"


async def test_idempotency_key(app):
    key = await app.tenant("contoso")
    headers = {"x-api-key": key, "idempotency-key": "order-42"}
    first = await app.http("start_run", "POST", "flows/support-reply/runs", TICKET, headers,
                           route={"flow": "support-reply"})
    again = await app.http("start_run", "POST", "flows/support-reply/runs", TICKET, headers,
                           route={"flow": "support-reply"})
    assert first.status_code == again.status_code == 200
    assert body(first)["run_id"] == body(again)["run_id"]
    assert app.emulator.stats()["requests"] >= 1
    other = await app.http("start_run", "POST", "flows/support-reply/runs", {"inputs": {"ticket": "else"}}, headers,
                           route={"flow": "support-reply"})
    assert other.status_code == 409
    assert len(await app.svc.stores.runs.list("contoso")) == 1


async def test_health_reports_store_and_queue_without_secrets(app):
    response = await app.http("health", "GET", "health")
    report = body(response)
    assert response.status_code == 200
    assert report["status"] == "ok" and report["components"]["store"] == {"status": "ok", "backend": "postgres"}
    assert report["components"]["queue"] == {"status": "ok"}
    assert "AccountKey" not in response.get_body().decode() and "postgresql://" not in response.get_body().decode()


async def test_async_run_when_the_queue_is_down_is_503_and_a_retry_with_the_key_sends_it(app):
    key = await app.tenant("contoso")
    working = app.svc.queue
    down = DownQueue()
    app.svc.queue = app.svc.runs.queue = down
    headers = {"x-api-key": key, "idempotency-key": "order-7"}
    try:
        plain = await app.http("start_run", "POST", "flows/support-reply/runs", TICKET, {"x-api-key": key},
                               params={"wait": "false"}, route={"flow": "support-reply"})
        keyed = await app.http("start_run", "POST", "flows/support-reply/runs", TICKET, headers,
                               params={"wait": "false"}, route={"flow": "support-reply"})
        health = await app.http("health", "GET", "health")
    finally:
        app.svc.queue = app.svc.runs.queue = working
    assert health.status_code == 503 and health.headers["retry-after"]
    assert body(health)["components"]["queue"] == {"status": "down", "error": "ConnectionError"}
    assert "AccountKey" not in health.get_body().decode()
    assert plain.status_code == keyed.status_code == 503 and down.attempts == 2
    assert "AccountKey" not in plain.get_body().decode() and plain.headers["retry-after"]
    dropped = await app.svc.stores.runs.get("contoso", body(plain)["run_id"])
    assert dropped.status == "rejected" and dropped.error == "the run queue cannot be reached"  # not queued forever
    kept = await app.svc.stores.runs.get("contoso", body(keyed)["run_id"])
    assert kept.status == "queued"
    retried = await app.http("start_run", "POST", "flows/support-reply/runs", TICKET, headers,
                             params={"wait": "false"}, route={"flow": "support-reply"})
    assert retried.status_code == 202 and body(retried)["run_id"] == kept.run_id
    assert [m["run_id"] for m in await app.queued_messages()] == [kept.run_id]
