"""Flows v2 against the emulator over HTTP with the real openai SDK: json_schema, tools, streamed steps seen by a
run observer, concurrent for_each, and a `connection` that is the tenant's own credential."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from shared.connections.allowlist import EndpointAllowlist
from shared.connections.openai_model import OpenAIModelPort
from shared.emulator.server import fingerprint, reply_for
from shared.engine.executor import FlowExecutor, RunContext, RunObserver, StepOutcome
from shared.engine.inputs import coerce_inputs
from shared.engine.parser import parse_flow, parse_flow_file
from shared.engine.ports import ChatRequest, ChatResult, Connection, ModelPort
from shared.engine.validator import validate_flow
from shared.secret import Secret
from tests.fakes import FakeCredentials

from ..unit.test_flow_corpus import HERE


class InFlight(ModelPort):
    """Passes calls through and records how many were in flight at once."""

    def __init__(self, inner: ModelPort) -> None:
        self.inner = inner
        self.now = 0
        self.most = 0

    async def chat(self, request: ChatRequest) -> ChatResult:
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            return await self.inner.chat(request)
        finally:
            self.now -= 1


class Recorder(RunObserver):
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def step_started(self, step: StepOutcome) -> None:
        self.events.append(("started", step.event()))

    def step_finished(self, step: StepOutcome) -> None:
        self.events.append(("finished", step.event()))

    def token(self, step_id: str, iteration: int, delta: str) -> None:
        self.events.append(("token", (step_id, iteration, delta)))


@pytest.fixture
async def port():
    model = OpenAIModelPort(EndpointAllowlist(("127.0.0.1",)))
    yield model
    await model.close()


def static(emulator):
    return {"default": Connection("default", endpoint=emulator.base_url, api_key=Secret("static-key"))}


async def run_flow(emulator, model, flow_source, inputs, observer=None, creds=None):
    connections = static(emulator)
    flow = validate_flow(parse_flow_file(flow_source) if not isinstance(flow_source, str) or "\n" not in flow_source
                         else parse_flow(flow_source, "t.yaml"), connections)
    executor = FlowExecutor(model, FakeCredentials(creds or {}), EndpointAllowlist(("127.0.0.1",)), connections)
    return await executor.run(flow, coerce_inputs(flow, inputs), RunContext("contoso", "Contoso", "run-1"), observer)


async def test_json_schema_extraction_returns_checked_json(emulator, port):
    text = "Please call me back.\nName: Ada Lovelace\nEmail: ada@example.com\nIt is urgent, priority high"
    outcome = await run_flow(emulator, port, HERE / "valid" / "json_schema_extraction.yaml", {"text": text})
    assert outcome.status == "succeeded", outcome.error
    assert outcome.outputs["contact"] == {"name": "Ada Lovelace", "email": "ada@example.com", "priority": "high"}
    assert outcome.outputs["email"] == "ada@example.com"


async def test_json_that_does_not_match_the_schema_is_a_step_error_naming_the_path(emulator, port):
    flow = ("id: f\nsteps:\n  - id: extract\n    kind: chat_completion\n    model: gpt-4o-mini\n"
            "    user_prompt: 'Items: none'\n    response_format:\n      type: json_schema\n      name: order\n"
            "      schema:\n        type: object\n        required: [items]\n        properties:\n"
            "          items:\n            type: array\n            items:\n              type: object\n"
            "              required: [sku]\n              properties:\n"
            "                sku: {type: string, pattern: '^SKU-[0-9]+$'}\n")
    outcome = await run_flow(emulator, port, flow, {})
    assert outcome.status == "failed" and outcome.error_code == "schema_mismatch"
    assert outcome.error.startswith("step extract: the model's JSON does not match schema order: at $.items[0].sku: ")
    assert "does not match '^SKU-[0-9]+$'" in outcome.error


async def test_tool_round_trip(emulator, port):
    outcome = await run_flow(emulator, port, HERE / "valid" / "tools_round_trip.yaml",
                             {"question": "How warm is it?\nCity: Oslo\nUnit: celsius"})
    assert outcome.status == "succeeded", outcome.error
    assert outcome.outputs["city"] == "Oslo"
    assert outcome.outputs["answer"].startswith('[gpt-4o-mini] Tool result: {"city": "Oslo", "temperature": 21}')
    assert [s.id for s in outcome.steps] == ["ask", "answer"] and all(s.usage.total_tokens for s in outcome.steps)


async def test_streamed_step_hands_deltas_to_the_observer_and_keeps_usage(emulator, port):
    flow = ("id: f\nsteps:\n  - {id: talk, kind: chat_completion, model: gpt-4o-mini, user_prompt: tell me more,"
            " stream: true}\noutputs:\n  text: '{{ response.content }}'\n  model: '{{ response.model }}'\n")
    observer = Recorder()
    outcome = await run_flow(emulator, port, flow, {}, observer)
    assert outcome.status == "succeeded", outcome.error
    expected = reply_for("gpt-4o-mini", [{"role": "user", "content": "tell me more"}])
    assert outcome.outputs == {"text": expected, "model": "gpt-4o-mini-2024-07-18"}
    tokens = [e[1] for e in observer.events if e[0] == "token"]
    assert len(tokens) > 3 and "".join(t[2] for t in tokens) == expected
    assert {(t[0], t[1]) for t in tokens} == {("talk", 0)}
    kinds = [e[0] for e in observer.events]
    assert kinds[0] == "started" and kinds[-1] == "finished" and set(kinds[1:-1]) == {"token"}
    finished = observer.events[-1][1]
    assert finished["status"] == "succeeded" and finished["usage"]["total_tokens"] == outcome.usage.total_tokens > 0
    assert finished["duration_ms"] > 0


async def test_concurrent_for_each_calls_at_once_and_keeps_item_order(emulator, port):
    topics = [f"topic {n} [[fault:latency=150]]" for n in range(8)]
    counted = InFlight(port)
    outcome = await run_flow(emulator, counted, HERE / "valid" / "concurrent_fan_out.yaml", {"topics": topics})
    assert outcome.status == "succeeded", outcome.error
    assert counted.most == 4  # concurrency: 4
    lines = outcome.outputs["lines"]
    assert [line["topic"] for line in lines] == topics
    assert all(line["line"].startswith(f"[gpt-4o-mini] Re: One line about topic {n} ") for n, line in
               enumerate(lines))
    assert all(line["words"] == len(line["line"].split()) for line in lines)
    drafts = [s for s in outcome.steps if s.id == "draft"]
    assert [s.iteration for s in drafts] == list(range(8))  # item order, deterministic usage keys


async def test_failed_concurrent_iteration_fails_the_loop_after_running_ones_finish(emulator, port):
    counted = InFlight(port)
    topics = ["a [[fault:latency=100]]", "[[content_filter]] b", "c [[fault:latency=100]]"]
    outcome = await run_flow(emulator, counted, HERE / "valid" / "concurrent_fan_out.yaml", {"topics": topics})
    assert outcome.status == "failed" and outcome.error_code == "content_filter"
    assert outcome.error.startswith("step draft: ")
    drafts = {s.iteration: s.status for s in outcome.steps if s.id == "draft"}
    assert drafts == {0: "succeeded", 1: "failed", 2: "succeeded"}
    assert outcome.usage.total_tokens == sum(s.usage.total_tokens for s in outcome.steps if s.usage) > 0


async def test_connection_resolves_to_the_tenants_own_credential(emulator, port):
    creds = {"contoso": {"foundry": {"kind": "azure_openai", "endpoint": emulator.base_url, "api_key": "tenant-key",
                                     "api_version": "2024-10-21"}}}
    before = emulator.stats()["by_key_fingerprint"]
    outcome = await run_flow(emulator, port, HERE / "valid" / "tenant_credential_connection.yaml", {}, creds=creds)
    assert outcome.status == "succeeded", outcome.error
    after = emulator.stats()["by_key_fingerprint"]
    assert after.get(fingerprint("tenant-key"), 0) - before.get(fingerprint("tenant-key"), 0) == 1
    missing = await run_flow(emulator, port, HERE / "valid" / "tenant_credential_connection.yaml", {}, creds={})
    assert missing.status == "failed" and missing.error_code == "credential_not_found"
    assert missing.error == "step ask: tenant contoso has no credential foundry"


async def test_observer_failure_does_not_change_the_run(emulator, port):
    class Broken(RunObserver):
        def step_finished(self, step: StepOutcome) -> None:
            raise RuntimeError("observer bug")

    flow = "id: f\nsteps:\n  - {id: a, kind: chat_completion, model: m, user_prompt: hi, stream: true}\n"
    outcome = await run_flow(emulator, port, flow, {}, Broken())
    assert outcome.status == "succeeded" and outcome.usage.total_tokens > 0
    event = json.loads(json.dumps(outcome.steps[0].event()))  # the step event is plain JSON
    assert {k: event[k] for k in ("id", "status")} == {"id": "a", "status": "succeeded"}


SHIPPED = HERE.parent.parent / "flows"


async def test_shipped_examples_run_against_the_emulator(emulator, port):
    text = "Invoice number: INV-2031\nSupplier: Northwind AS\nTotal: 1250.00\nCurrency: NOK\nDue date: 2026-12-31"
    invoice = await run_flow(emulator, port, SHIPPED / "examples" / "extract-invoice.yaml", {"text": text})
    assert invoice.status == "succeeded", invoice.error
    assert invoice.outputs["invoice"] == {"invoice_number": "INV-2031", "supplier": "Northwind AS", "total": 1250.0,
                                          "currency": "NOK", "due_date": "2026-12-31"}
    tools = await run_flow(emulator, port, SHIPPED / "examples" / "order-status-tools.yaml",
                           {"question": "Where is my order?\nOrder id: A-1001"})
    assert tools.status == "succeeded", tools.error
    assert tools.outputs["order_id"] == "A-1001"
    assert tools.outputs["answer"].startswith("[gpt-4o-mini] Tool result: shipped on Monday #")
    observer = Recorder()
    fan_out = await run_flow(emulator, port, SHIPPED / "examples" / "summarize-fan-out.yaml",
                             {"documents": [f"document number {n}" for n in range(10)]}, observer)
    assert fan_out.status == "succeeded", fan_out.error
    assert [s.split(" #")[0] for s in fan_out.outputs["summaries"]] == [
        f"[gpt-4o-mini] Re: document number {n}" for n in range(10)]
    streamed = "".join(e[1][2] for e in observer.events if e[0] == "token")
    assert streamed == fan_out.outputs["overview"] != ""


async def test_shipped_imported_example_matches_its_original_and_runs(emulator, port, monkeypatch):
    from shared.promptflow.flows import import_promptflow

    monkeypatch.chdir(SHIPPED.parent)
    original = Path("flows/examples/promptflow/feedback-router")
    assert import_promptflow(original, {"default"}).text == (original.parent / "feedback-router.yaml").read_text()
    creds = {"contoso": {"open_ai_connection": {"kind": "azure_openai", "endpoint": emulator.base_url,
                                                "api_key": "k", "api_version": "2024-10-21"}}}
    outcome = await run_flow(emulator, port, original.parent / "feedback-router.yaml",
                             {"feedback": "Export crashes. This is a bug."}, creds=creds)
    assert outcome.status == "succeeded", outcome.error
    assert outcome.outputs["kind"] == "bug" and outcome.outputs["bug_report"].startswith("[gpt-4o-mini] Re: ")
    assert outcome.outputs["reply"].startswith("[gpt-4o-mini] Re: Export crashes. This is a bug. #")


async def test_queued_run_events_stream_steps_and_tokens_in_order(emulator, port):
    from shared.engine.observer import QueuedRunEvents

    flow = ("id: f\nsteps:\n  - {id: plan, kind: chat_completion, model: gpt-4o-mini, user_prompt: plan it}\n"
            "  - {id: talk, kind: chat_completion, model: gpt-4o-mini, user_prompt: say it, stream: true}\n"
            "outputs:\n  text: '{{ response.content }}'\n")
    events = QueuedRunEvents()
    received: list[tuple[str, dict]] = []

    async def read() -> None:
        async for event in events:
            received.append(event)

    reader = asyncio.create_task(read())
    outcome = await run_flow(emulator, port, flow, {}, events)
    events.close()
    await reader
    assert outcome.status == "succeeded", outcome.error
    steps = [(e[1]["id"], e[1]["status"]) for e in received if e[0] == "step"]
    assert steps == [("plan", "running"), ("plan", "succeeded"), ("talk", "running"), ("talk", "succeeded")]
    tokens = [e[1] for e in received if e[0] == "token"]
    assert {t["step"] for t in tokens} == {"talk"} and "".join(t["delta"] for t in tokens) == outcome.outputs["text"]
    kinds = [e[0] for e in received]
    assert kinds.index("token") > 2 and kinds[-1] == "step"  # tokens between talk's start and finish
    finished = received[-1][1]
    assert finished["usage"]["total_tokens"] > 0 and finished["duration_ms"] > 0
