"""OpenTelemetry for Tenantflow: exporters chosen from the environment, spans for runs, steps and model calls, metrics,
trace context through queue messages, and trace ids in log records.

Nothing is imported or configured at import time. `configure_telemetry()` (called once by an entry point: the CLI,
`serve`, function_app.py) sets up, from the environment:
- `APPLICATIONINSIGHTS_CONNECTION_STRING` → Azure Monitor (the `azure-monitor-opentelemetry` distro: traces, metrics
  and logs);
- `OTEL_EXPORTER_OTLP_ENDPOINT` → OTLP over HTTP (traces and metrics; the standard `OTEL_EXPORTER_OTLP_*` variables
  apply);
- `OTEL_TRACES_EXPORTER=console` → every finished span as one JSON line on stderr.
With none of them set, telemetry is *not configured*: the API's no-op providers stay, and that is not an error.

What goes into spans and metrics: ids (`tenant.id`, `flow.id`, `run.id`, step ids), model and deployment names,
token counts, durations, costs, status and error *codes*. Never a secret, never an error message (it may quote a
prompt), and no prompt or completion text unless TENANTFLOW_CAPTURE_PROMPTS=true opts into it (model-call spans
then carry the messages); `tests/unit/test_telemetry.py` has a canary test for that.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any, Protocol
from urllib.parse import urlsplit

from shared.engine.observer import RunObserver, StepOutcome
from shared.engine.ports import ChatRequest, ChatResult, ModelPort, StepFailure
from shared.engine.usage import TokenUsage

INSTRUMENTATION_NAME = "tenantflow"
TRACE_CONTEXT_KEYS = ("traceparent", "tracestate")


@dataclass(frozen=True)
class RunLabels:
    """The run a model call belongs to, for span attributes and metric dimensions (set by `run_span`)."""

    tenant_id: str
    flow_id: str
    run_id: str


CURRENT_RUN: ContextVar[RunLabels | None] = ContextVar("tenantflow_current_run", default=None)
# the open step spans of the current run, by (step id, iteration): a model call is a child of its step's span
OPEN_STEPS: ContextVar[dict[tuple[str, int], Any] | None] = ContextVar("tenantflow_open_steps", default=None)


@dataclass(frozen=True)
class TelemetrySetup:
    """What `configure_telemetry` turned on; `exporters` is empty when telemetry is not configured."""

    exporters: tuple[str, ...]

    @property
    def configured(self) -> bool:
        return bool(self.exporters)


# --- configuration -------------------------------------------------------------------------------------------------
CONFIGURED: list[TelemetrySetup] = []  # the one setup of this process (configure_telemetry is idempotent)


def console_span_json(span: Any) -> str:
    return span.to_json(indent=None) + "\n"


def configure_telemetry(env: Mapping[str, str] | None = None) -> TelemetrySetup:
    """Sets the global tracer and meter providers from the environment, once per process; see the module doc."""
    if CONFIGURED:
        return CONFIGURED[0]
    env = os.environ if env is None else env
    azure = bool((env.get("APPLICATIONINSIGHTS_CONNECTION_STRING") or "").strip())
    otlp = bool((env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "").strip())
    console = "console" in [p.strip() for p in (env.get("OTEL_TRACES_EXPORTER") or "").lower().split(",")]
    exporters = tuple(name for name, on in (("azure_monitor", azure), ("otlp", otlp), ("console", console)) if on)
    if not exporters:
        CONFIGURED.append(TelemetrySetup(()))
        return CONFIGURED[0]

    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    span_processors: list[Any] = []
    metric_readers: list[Any] = []
    if otlp:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        span_processors.append(BatchSpanProcessor(OTLPSpanExporter()))
        metric_readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    if console:
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        span_processors.append(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr, formatter=console_span_json)))
    if azure:
        from azure.monitor.opentelemetry import configure_azure_monitor

        # logs: the app's own loggers (every module is under `shared.`), not the SDKs' request logs
        configure_azure_monitor(span_processors=span_processors, metric_readers=metric_readers, logger_name="shared")
    else:
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider

        resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or INSTRUMENTATION_NAME})
        tracer_provider = TracerProvider(resource=resource)
        for processor in span_processors:
            tracer_provider.add_span_processor(processor)
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=metric_readers))
    add_trace_ids_to_logs()
    CONFIGURED.append(TelemetrySetup(exporters))
    return CONFIGURED[0]


def telemetry_configured() -> bool:
    """Whether configure_telemetry turned an exporter on in this process."""
    return bool(CONFIGURED) and CONFIGURED[0].configured


def shutdown_telemetry() -> None:
    """Flushes and stops the global providers (short-lived processes such as the CLI call it before exiting)."""
    if not telemetry_configured():
        return
    from opentelemetry import metrics, trace

    for provider in (trace.get_tracer_provider(), metrics.get_meter_provider()):
        shutdown = getattr(provider, "shutdown", None)
        if shutdown is not None:
            shutdown()


def add_trace_ids_to_logs() -> None:
    """Every log record gets `trace_id` and `span_id` (hex; zeros outside a span), for formats such as
    `%(trace_id)s`; Azure Monitor's log export links records to traces by itself."""
    from opentelemetry import trace

    previous = logging.getLogRecordFactory()
    if getattr(previous, "adds_trace_ids", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        context = trace.get_current_span().get_span_context()
        record.trace_id = format(context.trace_id, "032x")
        record.span_id = format(context.span_id, "016x")
        return record

    factory.adds_trace_ids = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


# --- spans and instruments -----------------------------------------------------------------------------------------
class Telemetry:
    """A tracer and the metric instruments, from given providers (tests) or the global ones (`telemetry()`)."""

    def __init__(self, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        from opentelemetry import metrics, trace

        self.tracer = trace.get_tracer(INSTRUMENTATION_NAME, tracer_provider=tracer_provider)
        meter = metrics.get_meter(INSTRUMENTATION_NAME, meter_provider=meter_provider)
        self.token_usage = meter.create_histogram(
            "gen_ai.client.token.usage", unit="{token}", description="tokens per model call (GenAI convention)")
        self.operation_duration = meter.create_histogram(
            "gen_ai.client.operation.duration", unit="s", description="duration of a model call")
        self.tokens = meter.create_counter(
            "tenantflow.tokens", unit="{token}", description="tokens used, by tenant, model and token type")
        self.cost = meter.create_counter(
            "tenantflow.cost", unit="{currency}", description="cost of model calls in the price file's currency")
        self.run_duration = meter.create_histogram(
            "tenantflow.run.duration", unit="s", description="duration of a flow run, by tenant, flow and status")
        self.budget_refusals = meter.create_counter(
            "tenantflow.budget.refusals", unit="{call}", description="model calls refused by a tenant's budget")
        self.model_errors = meter.create_counter(
            "tenantflow.model.errors", unit="{call}", description="failed model calls, by error code")

    @contextmanager
    def run_span(self, tenant_id: str, flow_id: str, run_id: str, trigger: str) -> Iterator[RunOutcome]:
        """A span for one run; set `outcome.status` before leaving (it becomes an attribute and the metric's
        `run.status`). Model calls inside it are labelled with the run (CURRENT_RUN)."""
        outcome = RunOutcome()
        labels = RunLabels(tenant_id, flow_id, run_id)
        token = CURRENT_RUN.set(labels)
        steps_token = OPEN_STEPS.set({})
        started = time.perf_counter()
        attributes = {"tenant.id": tenant_id, "flow.id": flow_id, "run.id": run_id, "tenantflow.trigger": trigger}
        try:
            with self.tracer.start_as_current_span(f"run {flow_id}", attributes=attributes) as span:
                try:
                    yield outcome
                except BaseException as exc:
                    outcome.status = outcome.status or "failed"
                    span.set_attribute("error.type", type(exc).__name__)
                    raise
                finally:
                    span.set_attribute("run.status", outcome.status or "unknown")
                    if outcome.status in ("failed", "rejected", "interrupted"):
                        mark_error(span, outcome.error_code or outcome.status)
        finally:
            OPEN_STEPS.reset(steps_token)
            CURRENT_RUN.reset(token)
            self.run_duration.record(time.perf_counter() - started, {
                "tenant.id": tenant_id, "flow.id": flow_id, "run.status": outcome.status or "unknown"})

    @contextmanager
    def step_span(self, step_id: str, kind: str, iteration: int = 0) -> Iterator[Any]:
        attributes: dict[str, Any] = {"step.id": step_id, "step.kind": kind, "step.iteration": iteration}
        run = CURRENT_RUN.get()
        if run is not None:
            attributes.update({"tenant.id": run.tenant_id, "flow.id": run.flow_id, "run.id": run.run_id})
        with self.tracer.start_as_current_span(f"step {step_id}", attributes=attributes) as span:
            try:
                yield span
            except StepFailure as exc:
                mark_error(span, exc.code)
                raise

    def record_budget_refusal(self, tenant_id: str, model: str) -> None:
        self.budget_refusals.add(1, {"tenant.id": tenant_id, "gen_ai.request.model": model})

    def record_usage(self, tenant_id: str, model: str, usage: TokenUsage, cost: Decimal | None) -> None:
        """Tokens (and cost, when the model has a price) by tenant and model."""
        for token_type, count in (("input", usage.prompt_tokens), ("output", usage.completion_tokens)):
            self.tokens.add(count, {"tenant.id": tenant_id, "gen_ai.request.model": model,
                                    "gen_ai.token.type": token_type})
        if cost is not None:
            self.cost.add(float(cost), {"tenant.id": tenant_id, "gen_ai.request.model": model})


@dataclass
class RunOutcome:
    status: str | None = None
    error_code: str | None = None


class StepSpans(RunObserver):
    """A span per step of a run (a child of the run's span), from the run's observer events: started when the step
    starts, ended with its status and token usage when it finishes."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry
        self.open: dict[tuple[str, int], Any] = {}

    def step_started(self, step: StepOutcome) -> None:
        attributes: dict[str, Any] = {"step.id": step.id, "step.kind": step.kind, "step.iteration": step.iteration}
        run = CURRENT_RUN.get()
        if run is not None:
            attributes.update({"tenant.id": run.tenant_id, "flow.id": run.flow_id, "run.id": run.run_id})
        span = self.telemetry.tracer.start_span(f"step {step.id}", attributes=attributes)
        self.open[(step.id, step.iteration)] = span
        registry = OPEN_STEPS.get()
        if registry is not None:
            registry[(step.id, step.iteration)] = span

    def step_finished(self, step: StepOutcome) -> None:
        span = self.open.pop((step.id, step.iteration), None)
        registry = OPEN_STEPS.get()
        if registry is not None:
            registry.pop((step.id, step.iteration), None)
        if span is None:
            return
        span.set_attribute("step.status", step.status)
        if step.usage is not None:
            span.set_attributes({"gen_ai.usage.input_tokens": step.usage.prompt_tokens,
                                 "gen_ai.usage.output_tokens": step.usage.completion_tokens})
        if step.status == "failed":
            mark_error(span, step.error_code or "step_failed")
        span.end()


def mark_error(span: Any, code: str) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("error.type", code)
    span.set_status(Status(StatusCode.ERROR, code))


@lru_cache(maxsize=1)
def telemetry() -> Telemetry:
    """The process's Telemetry on the global providers (no-op until configure_telemetry sets them)."""
    return Telemetry()


# --- model calls ---------------------------------------------------------------------------------------------------
class Prices(Protocol):
    def cost(self, tenant_id: str, usage: TokenUsage, *names: str) -> Decimal | None: ...


def gen_ai_system(request: ChatRequest) -> str:
    return "openai" if request.connection.kind == "openai" else "az.ai.openai"


class TracedModelPort(ModelPort):
    """Wraps a ModelPort: one CLIENT span per call (`chat <model>`, GenAI attributes, the run's ids), token and
    duration metrics, cost by tenant and model (with `prices`), and model errors by code. Messages are recorded only
    with `capture_content` (TENANTFLOW_CAPTURE_PROMPTS=true): the span then carries `gen_ai.input.messages` and
    `gen_ai.output.messages` (JSON, as the GenAI semantic conventions name them)."""

    def __init__(self, inner: ModelPort, telemetry: Telemetry | None = None, prices: Prices | None = None,
                 capture_content: bool = False) -> None:
        self.inner = inner
        self.telemetry = telemetry
        self.prices = prices
        self.capture_content = capture_content

    async def chat(self, request: ChatRequest) -> ChatResult:
        from opentelemetry.trace import SpanKind, set_span_in_context

        t = self.telemetry or telemetry()
        step_span = (OPEN_STEPS.get() or {}).get((request.step_id, request.iteration))
        run = CURRENT_RUN.get()
        system = gen_ai_system(request)
        host = urlsplit(request.connection.endpoint).hostname or ""
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat", "gen_ai.system": system, "gen_ai.request.model": request.model,
            "gen_ai.request.temperature": request.temperature, "server.address": host,
        }
        if request.max_completion_tokens is not None:
            attributes["gen_ai.request.max_tokens"] = request.max_completion_tokens
        if request.step_id:
            attributes["step.id"] = request.step_id
        labels: dict[str, Any] = {"gen_ai.system": system, "gen_ai.request.model": request.model}
        if run is not None:
            attributes.update({"tenant.id": run.tenant_id, "flow.id": run.flow_id, "run.id": run.run_id})
            labels["tenant.id"] = run.tenant_id
        if self.capture_content:
            attributes["gen_ai.input.messages"] = json.dumps(request.messages, ensure_ascii=False, default=str)
        started = time.perf_counter()
        with t.tracer.start_as_current_span(f"chat {request.model}", kind=SpanKind.CLIENT, attributes=attributes,
                                            context=set_span_in_context(step_span) if step_span else None) as span:
            try:
                result = await self.inner.chat(request)
            except StepFailure as exc:
                mark_error(span, exc.code)
                t.model_errors.add(1, {**labels, "error.type": exc.code})
                t.operation_duration.record(time.perf_counter() - started, {**labels, "error.type": exc.code})
                raise
            usage = result.usage
            span.set_attributes({
                "gen_ai.response.model": result.model or request.model,
                "gen_ai.usage.input_tokens": usage.prompt_tokens,
                "gen_ai.usage.output_tokens": usage.completion_tokens,
                "gen_ai.response.finish_reasons": [result.finish_reason] if result.finish_reason else [],
            })
            if self.capture_content:
                span.set_attribute("gen_ai.output.messages", json.dumps(
                    [{"role": result.role, "content": result.content}], ensure_ascii=False))
            measured = {**labels, "gen_ai.response.model": result.model or request.model}
            t.operation_duration.record(time.perf_counter() - started, measured)
            for token_type, count in (("input", usage.prompt_tokens), ("output", usage.completion_tokens)):
                t.token_usage.record(count, {**measured, "gen_ai.token.type": token_type})
            if run is not None:
                cost = self.prices.cost(run.tenant_id, usage, result.model, request.model) if self.prices else None
                t.record_usage(run.tenant_id, request.model, usage, cost)
            return result


# --- trace context through messages and requests -------------------------------------------------------------------
def inject_trace_context(message: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Adds `traceparent` (and `tracestate`) of the current span to a queue message (a JSON object); no-op outside
    a span. Returns the message."""
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    message.update({k: v for k, v in carrier.items() if k in TRACE_CONTEXT_KEYS})
    return message


@contextmanager
def continued_trace(carrier: Mapping[str, Any]) -> Iterator[None]:
    """Makes the trace in `carrier` (a queue message, or request headers with lower-case names) the current parent,
    so that spans started inside continue it. A missing or malformed `traceparent` starts a new trace."""
    from opentelemetry import context, propagate

    text_carrier = {k: v for k, v in carrier.items() if k in TRACE_CONTEXT_KEYS and isinstance(v, str)}
    token = context.attach(propagate.extract(text_carrier))
    try:
        yield
    finally:
        context.detach(token)


def span_json_lines(text: str) -> list[dict[str, Any]]:
    """The spans in console-exporter output (one JSON object per line; other lines skipped) — for tests and notes."""
    spans = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                spans.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return spans
