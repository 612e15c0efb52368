"""The Functions surfaces: HTTP run latency over the engine alone (same store, same emulator), and flow-runs
queue messages processed per second against Azurite (receive → run → delete)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from shared.bootstrap import build_services
from shared.emulator.server import running_emulator
from shared.functions import http as http_functions
from shared.functions import http_handlers as handlers
from shared.functions.api_messages import ApiRequest
from shared.secret import Secret
from shared.services.run_queue import StorageRunQueue
from shared.settings import Settings
from tests.backends.fixtures import require_service

RUNS = 200
MESSAGES = 200


async def measure(emulator_url: str) -> dict[str, float]:
    connection = require_service("TENANTFLOW_TEST_TABLE_CONNECTION")
    queue = StorageRunQueue(connection, f"bench-{uuid.uuid4().hex[:8]}")
    settings = dataclasses.replace(Settings.from_env({}), sqlite_path=Path(tempfile.mkdtemp()) / "bench.db",
                                   allowed_hosts=("127.0.0.1",), default_endpoint=emulator_url)
    svc = await build_services(settings, queue=queue)
    created = await svc.tenants.add("bench")
    await svc.credentials.set("bench", "foundry", "azure_openai", endpoint=emulator_url, api_key=Secret("k"))
    body = json.dumps({"inputs": {"ticket": "benchmark ticket"}}).encode()
    request = ApiRequest("POST", "/api/flows/support-reply/runs", body, {"x-api-key": created.api_key.reveal()},
                         {}, {"flow": "support-reply"})
    import azure.functions as func

    from shared.functions import runtime
    from shared.functions.local_server import registered_functions

    runtime.use(svc)
    start_run = next(f.get_user_function() for f in registered_functions() if f.get_function_name() == "start_run")
    direct, http, function = [], [], []
    try:
        for _ in range(20):  # warm up clients, caches and the store
            await svc.runs.run("bench", "support-reply", {"ticket": "warm"}, "cli")
        for _ in range(RUNS):
            started = time.perf_counter()
            await svc.runs.run("bench", "support-reply", {"ticket": "benchmark ticket"}, "http")
            direct.append(time.perf_counter() - started)
            started = time.perf_counter()
            response = await http_functions.answer(request, handlers.start_run)
            http.append(time.perf_counter() - started)
            assert response.status == 200
            started = time.perf_counter()  # the registered Azure function: HttpRequest in, HttpResponse out
            answer = await start_run(func.HttpRequest("POST", "http://localhost/api/flows/support-reply/runs",
                                                      headers=request.headers, route_params=request.route, body=body))
            function.append(time.perf_counter() - started)
            assert answer.status_code == 200
        client = await queue.queue()
        for i in range(MESSAGES):
            await queue.send({"run_id": f"bench-{i}-{uuid.uuid4().hex[:6]}", "tenant": "bench",
                              "flow": "support-reply", "inputs": {"ticket": f"queued {i}"}})
        started = time.perf_counter()
        processed = 0
        while processed < MESSAGES:
            batch = [m async for m in client.receive_messages(max_messages=32, visibility_timeout=60)]
            if not batch:
                break

            async def handle(message):  # type: ignore[no-untyped-def]
                await svc.queue_worker.process(base64.b64decode(message.content))
                await client.delete_message(message)

            await asyncio.gather(*[handle(m) for m in batch])
            processed += len(batch)
        queue_rate = processed / (time.perf_counter() - started)
        await client.delete_queue()
    finally:
        runtime.use(None)
        await svc.close()
    return {
        "engine_run_with_store_and_emulator_p50_ms": round(statistics.median(direct) * 1000, 2),
        "http_run_p50_ms": round(statistics.median(http) * 1000, 2),
        "http_overhead_p50_ms": round((statistics.median(http) - statistics.median(direct)) * 1000, 2),
        "function_run_p50_ms": round(statistics.median(function) * 1000, 2),
        "function_overhead_p50_ms": round((statistics.median(function) - statistics.median(direct)) * 1000, 2),
        "queue_messages_per_s_azurite": round(queue_rate, 1),
    }


def run() -> dict[str, float]:
    with running_emulator() as emulator:
        return asyncio.run(measure(emulator.base_url))
