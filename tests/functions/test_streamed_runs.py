"""Streamed runs (issue 14): `POST /api/flows/{flow}/runs` with `Accept: text/event-stream` answers server-sent
events — `step`, `token` and a last `run` — read here by an SSE client over real HTTP (`tenantflow serve`'s app in
this loop), and sent whole by the Functions adapter. A client that disconnects does not stop the run."""

from __future__ import annotations

import asyncio
import json

import httpx

from shared.functions.local_server import serving_in_this_loop

DOCUMENTS = ["The parcel left the depot on Monday.", "Refunds take five days.", "Support is open 9 to 5."]
SSE = {"accept": "text/event-stream", "content-type": "application/json"}


def parse(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


async def test_a_streamed_run_sends_steps_tokens_and_the_run(app):
    key = await app.tenant("contoso")
    async with serving_in_this_loop() as base, httpx.AsyncClient(timeout=60) as client:
        async with client.stream("POST", f"{base}/api/flows/summarize-fan-out/runs", json={
                "inputs": {"documents": DOCUMENTS}}, headers={**SSE, "x-api-key": key}) as response:
            assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
            text = "".join([chunk async for chunk in response.aiter_text()])
        events = parse(text)
        kinds = [kind for kind, _ in events]
        assert kinds[-1] == "run" and kinds.count("run") == 1 and "token" in kinds
        run = events[-1][1]
        assert run["status"] == "succeeded"
        deltas = "".join(data["delta"] for kind, data in events if kind == "token")
        assert deltas == run["outputs"]["overview"] and all(d["step"] == "combine" for k, d in events if k == "token")
        finished = [data for kind, data in events if kind == "step" and data["status"] == "succeeded"]
        assert {(s["id"], s["iteration"]) for s in finished if s["id"] == "summarize"} == {
            ("summarize", i) for i in range(len(DOCUMENTS))}
        assert all(s["usage"]["total_tokens"] > 0 for s in finished if s["id"] in ("summarize", "combine"))
        stored = await client.get(f"{base}/api/runs/{run['run_id']}", headers={"x-api-key": key})
        assert stored.json()["outputs"] == run["outputs"]
        refused = await client.post(f"{base}/api/flows/no-such-flow/runs", json={"inputs": {}},
                                    headers={**SSE, "x-api-key": key})
        assert refused.status_code == 404 and refused.headers["content-type"] == "application/problem+json"


async def test_a_client_that_disconnects_does_not_stop_the_run(app):
    key = await app.tenant("contoso")
    async with serving_in_this_loop() as base, httpx.AsyncClient(timeout=60) as client:
        async with client.stream("POST", f"{base}/api/flows/summarize-fan-out/runs", json={
                "inputs": {"documents": DOCUMENTS}}, headers={**SSE, "x-api-key": key}) as response:
            location = response.headers["location"]
            async for line in response.aiter_lines():
                if line.startswith("event: step"):
                    break  # the client goes away after the first event
        for _ in range(200):
            run = (await client.get(f"{base}{location}", headers={"x-api-key": key})).json()
            if run["status"] == "succeeded":
                break
            await asyncio.sleep(0.05)
        assert run["status"] == "succeeded"
        records = await app.svc.stores.usage.list_for_run("contoso", run["run_id"])
        assert len(records) == len(DOCUMENTS) + 1  # every call recorded, once
        assert sum(r.total_tokens for r in records) == run["usage"]["total_tokens"]


async def test_the_functions_adapter_sends_the_events_whole(app):
    key = await app.tenant("contoso")
    response = await app.http("start_run", "POST", "flows/summarize-fan-out/runs", {"inputs": {"documents": DOCUMENTS}},
                              {**SSE, "x-api-key": key}, route={"flow": "summarize-fan-out"})
    events = parse(response.get_body().decode())
    assert response.status_code == 200 and events[-1][0] == "run" and events[-1][1]["status"] == "succeeded"
