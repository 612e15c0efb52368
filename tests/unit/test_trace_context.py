"""Trace context is continued, with the SDK's in-memory exporter: a run started over HTTP with a `traceparent` is a
child of the caller's span, and a queued run carries the context in its message, so the worker's run span, its steps
and its model call are in the caller's trace too (HTTP → queue → worker)."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

import azure.functions as func
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared import telemetry
from shared.bootstrap import build_services
from shared.functions import runtime
from shared.functions.local_server import registered_functions
from shared.secret import Secret
from shared.settings import Settings
from tests.backends.fixtures import fresh_encryption_keys
from tests.fakes import FakeModel, ManualClock
from tests.memory.stores import InMemoryRunQueue, InMemoryStores

FUNCTIONS = {f.get_function_name(): f.get_user_function() for f in registered_functions()}
TRACE_ID, PARENT_ID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture
def spans():
    """The global tracer provider with an in-memory exporter, and telemetry marked configured, for one test."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        trace.set_tracer_provider(TracerProvider())
        provider = trace.get_tracer_provider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    saved = list(telemetry.CONFIGURED)
    telemetry.CONFIGURED[:] = [telemetry.TelemetrySetup(("memory",))]
    yield exporter
    telemetry.CONFIGURED[:] = saved
    exporter.shutdown()


@pytest.fixture
async def app(tmp_path, spans):
    settings = dataclasses.replace(Settings.from_env({}), sqlite_path=tmp_path / "unused.db",
                                   allowed_hosts=("127.0.0.1",), encryption_keys=fresh_encryption_keys())
    clock = ManualClock(datetime(2026, 3, 14, 9, 26, 53, tzinfo=UTC))
    queue = InMemoryRunQueue()
    svc = await build_services(settings, stores=InMemoryStores(clock), queue=queue, clock=clock, model=FakeModel())
    runtime.use(svc)
    created = await svc.tenants.add("contoso")
    await svc.credentials.set("contoso", "foundry", "azure_openai", endpoint="http://127.0.0.1:9", api_key=Secret("k"))
    yield svc, queue, created.api_key.reveal()
    runtime.use(None)
    await svc.close()


async def start(api_key: str, headers: dict[str, str], wait: bool = True) -> dict:
    request = func.HttpRequest(method="POST", url="http://localhost/api/flows/support-reply/runs",
                               headers={"x-api-key": api_key, **headers}, params={} if wait else {"wait": "false"},
                               route_params={"flow": "support-reply"},
                               body=json.dumps({"inputs": {"ticket": "Where is my parcel?"}}).encode())
    response = await FUNCTIONS["start_run"](request)
    assert response.status_code in (200, 202), response.get_body()
    return json.loads(response.get_body())


def hex_trace(span) -> str:
    return format(span.context.trace_id, "032x")


async def test_an_incoming_traceparent_is_the_parent_of_the_run_span(app, spans):
    svc, _, key = app
    run = await start(key, {"traceparent": TRACEPARENT})
    by_name = {s.name: s for s in spans.get_finished_spans()}
    root = by_name["run support-reply"]
    assert root.attributes["run.id"] == run["run_id"] and hex_trace(root) == TRACE_ID
    assert root.parent is not None and root.parent.is_remote and format(root.parent.span_id, "016x") == PARENT_ID
    assert {hex_trace(s) for s in spans.get_finished_spans()} == {TRACE_ID}  # steps and the model call too
    step, call = by_name["step draft"], by_name["chat gpt-4o-mini"]
    assert step.parent.span_id == root.context.span_id and call.parent.span_id == step.context.span_id
    spans.clear()
    await start(key, {})  # no traceparent: a trace of its own
    assert {hex_trace(s) for s in spans.get_finished_spans()} - {TRACE_ID}


async def test_a_queued_run_carries_the_trace_to_the_worker(app, spans):
    svc, queue, key = app
    run = await start(key, {"traceparent": TRACEPARENT, "tracestate": "vendor=1"}, wait=False)
    [message] = queue.receive()
    assert message["traceparent"].split("-")[1] == TRACE_ID and message["run_id"] == run["run_id"]
    assert spans.get_finished_spans() == ()  # nothing ran on the HTTP side
    outcome = await svc.queue_worker.process(json.dumps(message).encode())
    assert outcome.status == "executed" and outcome.run.status == "succeeded"
    finished = spans.get_finished_spans()
    root = next(s for s in finished if s.name == "run support-reply")
    assert root.attributes["tenantflow.trigger"] == "http" and root.attributes["run.id"] == run["run_id"]
    assert format(root.parent.span_id, "016x") == PARENT_ID and root.context.trace_state.get("vendor") == "1"
    assert {hex_trace(s) for s in finished} == {TRACE_ID} and len(finished) >= 3
