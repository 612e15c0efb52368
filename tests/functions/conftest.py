"""The Functions app in-process: real azure.functions request objects, the registered functions themselves,
storage on real PostgreSQL (or every backend where a test says so), the run queue on Azurite, and model calls
through the openai SDK to the emulator."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import uuid
from typing import Any

import azure.functions as func
import pytest
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest

from shared.bootstrap import build_services
from shared.functions import runtime
from shared.functions.local_server import registered_functions
from shared.secret import Secret
from shared.services.run_queue import StorageRunQueue
from tests.backends import postgres_backend
from tests.backends.fixtures import require_service
from tests.fakes import ManualClock

FUNCTIONS = {f.get_function_name(): f for f in registered_functions()}


class AppHarness:
    def __init__(self, svc: Any, emulator: Any, queue_name: str, clock: ManualClock) -> None:
        self.svc = svc
        self.clock = clock
        self.emulator = emulator
        self.queue_name = queue_name
        self.functions = {name: f.get_user_function() for name, f in FUNCTIONS.items()}

    async def http(self, name: str, method: str, path: str, body: Any = b"", headers: dict[str, str] | None = None,
                   params: dict[str, str] | None = None, route: dict[str, str] | None = None) -> func.HttpResponse:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = func.HttpRequest(method=method, url=f"http://localhost/api/{path}", headers=headers or {},
                                   params=params or {}, route_params=route or {}, body=raw)
        return await self.functions[name](request)

    async def queue(self, body: str | bytes, dequeue_count: int = 1) -> None:
        """One delivery of a message to the registered queue function."""
        await self.functions["flow_runs"](QueueMessage(id=uuid.uuid4().hex, body=body, dequeue_count=dequeue_count))

    async def deliver(self, body: str | bytes, dequeue_count: int = 1, retry_after: float = 0.2) -> str:
        """Delivers a message as the Functions host does: a failed attempt is retried after the visibility
        timeout (shortened here) with dequeue_count + 1, and after maxDequeueCount (5) the message is poisoned.
        Answers "done" or "poison"."""
        while True:
            try:
                await self.queue(body, dequeue_count)
                return "done"
            except Exception:
                if dequeue_count >= 5:
                    return "poison"
                dequeue_count += 1
                await asyncio.sleep(retry_after)

    async def timer(self) -> None:
        await self.functions["schedules"](TimerRequest())

    async def tenant(self, tenant_id: str, key: str = "sk-tenant-key") -> str:
        created = await self.svc.tenants.add(tenant_id, tenant_id.title())
        await self.svc.credentials.set(tenant_id, "foundry", "azure_openai", endpoint=self.emulator.base_url,
                                       api_key=Secret(key))
        return created.api_key.reveal()

    async def queued_messages(self) -> list[dict[str, Any]]:
        client = await self.svc.queue.queue()
        # the Functions host reads queue messages as base64 (host.json messageEncoding)
        return [json.loads(base64.b64decode(m.content)) async for m in client.receive_messages(max_messages=32)]


async def harness_for(settings: Any, emulator: Any):
    connection = require_service("TENANTFLOW_TEST_TABLE_CONNECTION")
    queue_name = f"flow-runs-{uuid.uuid4().hex[:10]}"
    settings = dataclasses.replace(settings, allowed_hosts=("127.0.0.1",), default_endpoint=emulator.base_url,
                                   queue_connection=Secret(connection), run_queue=queue_name)
    queue = StorageRunQueue(connection, queue_name)
    clock = ManualClock()
    svc = await build_services(settings, queue=queue, clock=clock)
    runtime.use(svc)
    harness = AppHarness(svc, emulator, queue_name, clock)
    return harness, svc, queue


@pytest.fixture
async def app(tmp_path, emulator):
    """The app on PostgreSQL."""
    settings = await postgres_backend.provision(tmp_path)
    harness, svc, queue = await harness_for(settings, emulator)
    yield harness
    await (await queue.queue()).delete_queue()
    await svc.close()
    runtime.use(None)
    await postgres_backend.dispose(settings)


@pytest.fixture
async def app_on_every_backend(store_settings, emulator):
    harness, svc, queue = await harness_for(store_settings, emulator)
    yield harness
    await (await queue.queue()).delete_queue()
    await svc.close()
    runtime.use(None)
