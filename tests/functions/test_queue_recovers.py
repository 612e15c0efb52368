"""The run queue recovers by itself: Azurite (a dedicated one, on free ports) is killed and started again while
the app keeps running. Meanwhile `?wait=false` and /api/health answer 503 problem details; afterwards both work
again without restarting the app, and the runs left `queued` are sent again by the timer's sweep."""

from __future__ import annotations

import base64
import dataclasses
import json
import socket
import subprocess
import time
from pathlib import Path

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest

from shared.bootstrap import build_services
from shared.functions import runtime
from shared.functions.local_server import registered_functions
from shared.secret import Secret
from shared.services.run_queue import StorageRunQueue
from shared.services.runs import QUEUED_RESEND_AFTER
from shared.settings import REPO_ROOT, Settings
from tests.backends.fixtures import fresh_encryption_keys
from tests.fakes import ManualClock
from tests.integration.test_serve import free_port

AZURITE = REPO_ROOT / "scripts" / "azurite" / "node_modules" / ".bin" / "azurite"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
FUNCTIONS = {f.get_function_name(): f.get_user_function() for f in registered_functions()}


class Azurite:
    """Azurite's queue service alone, in memory, on one free port (as scripts/services.sh starts it)."""

    def __init__(self, folder: Path) -> None:
        if not AZURITE.exists():
            pytest.skip("Azurite is not installed: scripts/services.sh up installs it")
        self.folder, self.port, self.process = folder, free_port(), None

    @property
    def connection(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={ACCOUNT_KEY};"
                f"QueueEndpoint=http://127.0.0.1:{self.port}/devstoreaccount1;")

    def start(self) -> None:
        self.process = subprocess.Popen(
            [str(AZURITE.parent / "azurite-queue"), "--silent", "--skipApiVersionCheck",
             "--disableTelemetry", "--inMemoryPersistence", "--loose", "--queueHost", "127.0.0.1", "--queuePort",
             str(self.port)], cwd=self.folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert time.monotonic() < deadline and self.process.poll() is None, "Azurite did not start"
                time.sleep(0.1)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
async def azurite(tmp_path):
    server = Azurite(tmp_path)
    server.start()
    yield server
    server.kill()


async def http(name: str, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
               params: dict[str, str] | None = None, route: dict[str, str] | None = None) -> func.HttpResponse:
    request = func.HttpRequest(method=method, url=f"http://localhost/api/{path}", headers=headers or {},
                               params=params or {}, route_params=route or {}, body=body)
    return await FUNCTIONS[name](request)


async def test_queue_and_health_recover_after_azurite_restarts_and_the_sweep_resends(tmp_path, azurite, emulator):
    queue = StorageRunQueue(azurite.connection, "flow-runs")
    clock = ManualClock()
    settings = dataclasses.replace(Settings.from_env({}), sqlite_path=tmp_path / "app.db", allowed_hosts=("127.0.0.1",),
                                   default_endpoint=emulator.base_url, encryption_keys=fresh_encryption_keys(),
                                   queue_connection=Secret(azurite.connection))
    svc = await build_services(settings, queue=queue, clock=clock)
    runtime.use(svc)
    try:
        key = (await svc.tenants.add("contoso")).api_key.reveal()
        body = json.dumps({"inputs": {"ticket": "later"}}).encode()

        async def start(idempotency_key: str | None = None) -> func.HttpResponse:
            headers = {"x-api-key": key, **({"idempotency-key": idempotency_key} if idempotency_key else {})}
            return await http("start_run", "POST", "flows/support-reply/runs", body, headers,
                              params={"wait": "false"}, route={"flow": "support-reply"})

        assert (await start()).status_code == 202
        azurite.kill()
        down = [await start("order-1"), await start(), await http("health", "GET", "health")]
        for response in down:
            assert response.status_code == 503 and response.headers["retry-after"], response.get_body()
            assert response.headers["content-type"] == "application/problem+json"
            assert "AccountKey" not in response.get_body().decode()
        kept = json.loads(down[0].get_body())["run_id"]
        assert (await svc.stores.runs.get("contoso", kept)).status == "queued"

        azurite.start()  # on the same port, empty: even the queue is gone
        health = await http("health", "GET", "health")
        assert health.status_code == 200, health.get_body()
        assert json.loads(health.get_body())["components"]["queue"] == {"status": "ok"}
        after = await start()
        assert after.status_code == 202, after.get_body()

        clock.advance(seconds=QUEUED_RESEND_AFTER.total_seconds() + 1)
        await FUNCTIONS["schedules"](TimerRequest())
        client = await queue.queue()
        sent = [json.loads(base64.b64decode(m.content))["run_id"]
                async for m in client.receive_messages(max_messages=32)]
        assert kept in sent and json.loads(after.get_body())["run_id"] in sent
        runs = await svc.stores.runs.list("contoso")
        assert sorted(r.status for r in runs) == ["queued", "queued", "queued", "rejected"]
    finally:
        await svc.close()
        runtime.use(None)
