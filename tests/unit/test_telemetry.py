"""Telemetry with the SDK's in-memory exporter and reader: run/step/model-call spans with the GenAI attributes, metrics
by tenant and model, trace context through a queue message, trace ids in logs, the console exporter, nothing set up
when nothing is configured — and a canary: no prompt text or secret in any span, metric or log. Model calls go
through the real openai SDK to the emulator over HTTP."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from decimal import Decimal

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.connections.allowlist import EndpointAllowlist
from shared.connections.openai_model import OpenAIModelPort
from shared.emulator.server import running_emulator
from shared.engine.ports import ChatRequest, Connection, StepFailure
from shared.secret import Secret
from shared.services.prices import PriceBook
from shared.settings import Settings
from shared.telemetry import (
    Telemetry,
    TracedModelPort,
    add_trace_ids_to_logs,
    continued_trace,
    inject_trace_context,
    span_json_lines,
)

PROMPT_CANARY = "prompt-canary-8c1f2e"
KEY_CANARY = "sk-key-canary-51d0aa"


class Recorded:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.reader = InMemoryMetricReader()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.telemetry = Telemetry(tracer_provider, MeterProvider(metric_readers=[self.reader]))

    def points(self, name: str) -> list[tuple[dict, float]]:
        data = self.reader.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        for point in metric.data.data_points:
                            found.append((dict(point.attributes),
                                          getattr(point, "value", None) if hasattr(point, "value") else point.sum))
        return found

    def metrics_json(self) -> str:
        data = self.reader.get_metrics_data()
        return data.to_json() if data else ""


@pytest.fixture
def recorded():
    return Recorded()


def chat(connection: Connection, text: str, model: str = "gpt-4o-mini") -> ChatRequest:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]
    return ChatRequest(connection, model, messages, max_completion_tokens=50, step_id="draft")


async def test_run_step_and_model_spans_with_genai_attributes_and_metrics(recorded, emulator):
    prices = PriceBook.load(Settings.from_env({}).prices_file)
    port = TracedModelPort(OpenAIModelPort(EndpointAllowlist(("127.0.0.1",))), recorded.telemetry, prices)
    connection = Connection("default", "azure_openai", emulator.base_url, Secret("any"))
    t = recorded.telemetry
    with t.run_span("contoso", "support-reply", "run-1", "http") as outcome:
        with t.step_span("draft", "chat_completion"):
            result = await port.chat(chat(connection, "Where is my order?"))
        outcome.status = "succeeded"
    await port.inner.close()
    spans = {span.name: span for span in recorded.spans.get_finished_spans()}
    assert set(spans) == {"run support-reply", "step draft", "chat gpt-4o-mini"}
    run, step, call = spans["run support-reply"], spans["step draft"], spans["chat gpt-4o-mini"]
    assert step.parent.span_id == run.context.span_id and call.parent.span_id == step.context.span_id
    assert len({s.context.trace_id for s in spans.values()}) == 1
    assert {k: call.attributes[k] for k in ("tenant.id", "flow.id", "run.id")} == {
        "tenant.id": "contoso", "flow.id": "support-reply", "run.id": "run-1"}
    assert call.attributes["gen_ai.system"] == "az.ai.openai"
    assert call.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert call.attributes["gen_ai.response.model"] == result.model
    assert call.attributes["gen_ai.usage.input_tokens"] == result.usage.prompt_tokens > 0
    assert call.attributes["gen_ai.usage.output_tokens"] == result.usage.completion_tokens > 0
    assert call.kind.name == "CLIENT" and run.attributes["run.status"] == "succeeded"

    tokens = {(a["tenant.id"], a["gen_ai.request.model"], a["gen_ai.token.type"]): v
              for a, v in recorded.points("tenantflow.tokens")}
    assert tokens == {("contoso", "gpt-4o-mini", "input"): result.usage.prompt_tokens,
                      ("contoso", "gpt-4o-mini", "output"): result.usage.completion_tokens}
    [(cost_labels, cost)] = recorded.points("tenantflow.cost")
    assert cost_labels == {"tenant.id": "contoso", "gen_ai.request.model": "gpt-4o-mini"}
    assert Decimal(str(cost)).quantize(Decimal("1e-12")) == prices.cost(
        "contoso", result.usage, "gpt-4o-mini").quantize(Decimal("1e-12"))
    [(run_labels, _)] = recorded.points("tenantflow.run.duration")
    assert run_labels == {"tenant.id": "contoso", "flow.id": "support-reply", "run.status": "succeeded"}


async def test_model_errors_by_code_and_budget_refusals(recorded):
    t = recorded.telemetry
    with running_emulator(api_keys={"the-key"}) as emulator:
        port = TracedModelPort(OpenAIModelPort(EndpointAllowlist(("127.0.0.1",)), max_attempts=1), t)
        connection = Connection("default", "azure_openai", emulator.base_url, Secret("wrong-key"))
        with t.run_span("fabrikam", "triage", "run-2", "queue") as outcome, pytest.raises(StepFailure):
            try:
                await port.chat(chat(connection, "hello"))
            finally:
                outcome.status, outcome.error_code = "failed", "authentication_failed"
        await port.inner.close()
    t.record_budget_refusal("fabrikam", "gpt-4o-mini")
    [(labels, count)] = recorded.points("tenantflow.model.errors")
    assert count == 1 and labels["error.type"] == "authentication_failed" and labels["tenant.id"] == "fabrikam"
    assert recorded.points("tenantflow.budget.refusals") == [
        ({"tenant.id": "fabrikam", "gen_ai.request.model": "gpt-4o-mini"}, 1)]
    spans = {span.name: span for span in recorded.spans.get_finished_spans()}
    assert spans["chat gpt-4o-mini"].status.status_code.name == "ERROR"
    assert spans["chat gpt-4o-mini"].attributes["error.type"] == "authentication_failed"
    assert spans["run triage"].attributes["error.type"] == "authentication_failed"


async def test_canary_no_prompt_or_secret_in_spans_metrics_or_logs(recorded, emulator, caplog):
    caplog.set_level(logging.INFO)
    port = TracedModelPort(OpenAIModelPort(EndpointAllowlist(("127.0.0.1",)), max_attempts=1), recorded.telemetry)
    good = Connection("default", "azure_openai", emulator.base_url, Secret(KEY_CANARY))
    with recorded.telemetry.run_span("contoso", "support-reply", "run-3", "cli") as outcome:
        await port.chat(chat(good, f"my order {PROMPT_CANARY} is late"))
        with pytest.raises(StepFailure):
            await port.chat(chat(good, f"again {PROMPT_CANARY} [[content_filter]]"))
        outcome.status = "succeeded"
    await port.inner.close()
    exported = [span.to_json() for span in recorded.spans.get_finished_spans()]
    assert len(exported) == 3
    everything = "\n".join(exported) + recorded.metrics_json() + caplog.text
    assert PROMPT_CANARY not in everything and KEY_CANARY not in everything
    assert "gen_ai.usage.input_tokens" in everything  # the spans were there to search


async def test_prompt_capture_is_opt_in_and_never_records_the_key(recorded, emulator):
    port = TracedModelPort(OpenAIModelPort(EndpointAllowlist(("127.0.0.1",)), max_attempts=1), recorded.telemetry,
                           capture_content=True)
    good = Connection("default", "azure_openai", emulator.base_url, Secret(KEY_CANARY))
    with recorded.telemetry.run_span("contoso", "support-reply", "run-4", "cli") as outcome:
        result = await port.chat(chat(good, f"my order {PROMPT_CANARY} is late"))
        outcome.status = "succeeded"
    await port.inner.close()
    span = next(s for s in recorded.spans.get_finished_spans() if s.name == "chat gpt-4o-mini")
    sent = json.loads(span.attributes["gen_ai.input.messages"])
    assert sent[-1] == {"role": "user", "content": f"my order {PROMPT_CANARY} is late"}
    assert json.loads(span.attributes["gen_ai.output.messages"]) == [{"role": "assistant", "content": result.content}]
    everything = "\n".join(s.to_json() for s in recorded.spans.get_finished_spans()) + recorded.metrics_json()
    assert KEY_CANARY not in everything


def test_prompt_capture_is_a_setting_that_is_off_by_default():
    from shared.settings import SettingsError

    assert Settings.from_env({}).capture_prompts is False
    assert Settings.from_env({"TENANTFLOW_CAPTURE_PROMPTS": "TRUE"}).capture_prompts is True
    with pytest.raises(SettingsError, match="TENANTFLOW_CAPTURE_PROMPTS: must be true or false, got 'yes'"):
        Settings.from_env({"TENANTFLOW_CAPTURE_PROMPTS": "yes"})


def test_trace_context_travels_in_a_queue_message(recorded):
    tracer = recorded.telemetry.tracer
    with tracer.start_as_current_span("POST /api/flows/x/runs") as request_span:
        message = inject_trace_context({"run_id": "r", "tenant": "contoso", "flow": "x", "inputs": {}})
    assert message["traceparent"].split("-")[1] == format(request_span.get_span_context().trace_id, "032x")
    received = json.loads(json.dumps(message))
    with continued_trace(received), tracer.start_as_current_span("flow-runs message") as worker_span:
        pass
    assert worker_span.context.trace_id == request_span.get_span_context().trace_id
    assert worker_span.parent.span_id == request_span.get_span_context().span_id
    with continued_trace({"traceparent": "00-garbage"}), tracer.start_as_current_span("fresh") as fresh:
        pass
    assert fresh.parent is None and fresh.context.trace_id != request_span.get_span_context().trace_id
    assert inject_trace_context({"run_id": "outside any span"}) == {"run_id": "outside any span"}


def test_logs_carry_trace_ids(recorded, caplog):
    add_trace_ids_to_logs()
    caplog.set_level(logging.INFO)
    with recorded.telemetry.tracer.start_as_current_span("work") as span:
        logging.getLogger("shared.test").info("inside")
    logging.getLogger("shared.test").info("outside")
    inside, outside = caplog.records[-2:]
    assert inside.trace_id == format(span.get_span_context().trace_id, "032x") != "0" * 32
    assert outside.trace_id == "0" * 32


PROGRAM = """
import sys
from shared.telemetry import configure_telemetry, shutdown_telemetry, telemetry
setup = configure_telemetry()
print(",".join(setup.exporters), "sdk" if "opentelemetry.sdk" in sys.modules else "no-sdk")
if setup.configured:
    with telemetry().run_span("contoso", "support-reply", "run-9", "cli") as outcome:
        with telemetry().step_span("draft", "chat_completion"):
            pass
        outcome.status = "succeeded"
shutdown_telemetry()
"""


def run_program(env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "APPLICATIONINSIGHTS_"))}
    return subprocess.run([sys.executable, "-c", PROGRAM], env={**env, **env_extra}, capture_output=True, text=True,
                          timeout=60)


def test_console_exporter_prints_json_spans_on_stderr():
    result = run_program({"OTEL_TRACES_EXPORTER": "console"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "console sdk"
    spans = span_json_lines(result.stderr)
    assert [s["name"] for s in spans] == ["step draft", "run support-reply"]
    assert spans[1]["attributes"] == {"tenant.id": "contoso", "flow.id": "support-reply", "run.id": "run-9",
                                      "tenantflow.trigger": "cli", "run.status": "succeeded"}
    assert spans[0]["parent_id"] == spans[1]["context"]["span_id"]


def test_nothing_configured_is_not_an_error_and_loads_no_sdk():
    result = run_program({})
    assert result.returncode == 0 and result.stdout.strip() == "no-sdk" and result.stderr == ""
