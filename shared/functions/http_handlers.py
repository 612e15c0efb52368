"""The HTTP API's handlers: ApiRequest in, ApiResponse out. Each parses what HTTP carries (headers, query, JSON
body), calls a service with domain values, and shapes its answer; errors become problem details (see
shared.functions.problems). Heavy modules are imported inside the handlers: the blueprint imports this module
when the host indexes the app."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from shared.functions.api_messages import ApiRequest, ApiResponse
from shared.functions.http_auth import caller, caller_key_id, require_operator, webhook_tenant
from shared.functions.problems import ProblemDetails
from shared.functions.request_checks import (
    RequestCheckError,
    check_flow_id,
    check_run_id,
    check_tenant_segment,
    parse_json_body,
)

if TYPE_CHECKING:
    from shared.bootstrap import Services
    from shared.services.usage import UsageQuery
    from shared.storage.models import RunRecord, Tenant

MAX_BODY_BYTES = 1024 * 1024
MAX_IDEMPOTENCY_KEY = 200
USAGE_GROUPS = ("day", "model", "flow", "key")
T = TypeVar("T")


TITLES = {400: "Bad JSON", 401: "Unauthenticated", 404: "Not found", 413: "Payload too large"}


def checked(check: Callable[[], T]) -> T:
    """Runs a request check (shared.functions.request_checks); its refusal becomes problem details."""
    try:
        return check()
    except RequestCheckError as exc:
        raise ProblemDetails(exc.status, TITLES.get(exc.status, "Bad request"), str(exc),
                             errors=[{"field": exc.field, "message": exc.message}]) from None


def parse_json(request: ApiRequest) -> Any:
    """The JSON body, within limits (size, nesting depth, integer digits, no lone surrogates): 400 / 413."""
    if not request.body.strip():
        return {}
    return checked(lambda: parse_json_body(request.body, max_bytes=MAX_BODY_BYTES))


def run_inputs(request: ApiRequest) -> dict[str, Any]:
    """The `inputs` object of a run request body `{"inputs": {…}}`."""
    body = parse_json(request)
    if not isinstance(body, dict):
        raise ProblemDetails(422, "Invalid request", "the body must be a JSON object like {\"inputs\": {…}}",
                             errors=[{"field": "body", "message": "must be an object"}])
    unknown = sorted(set(body) - {"inputs"})
    if unknown:
        raise ProblemDetails(422, "Invalid request", f"unknown field {unknown[0]!r}",
                             errors=[{"field": name, "message": "unknown field"} for name in unknown])
    inputs = body.get("inputs", {})
    if not isinstance(inputs, dict):
        raise ProblemDetails(422, "Invalid input", "inputs must be an object",
                             errors=[{"field": "inputs", "message": "must be an object"}])
    return inputs


def run_response(run: RunRecord, accepted: bool = False) -> ApiResponse:
    from shared.services.runs import run_to_json

    location = {"location": f"/api/runs/{run.run_id}"}
    if accepted:
        return ApiResponse.json(202, run_to_json(run), location)
    if run.usage.get("error_code") == "budget_exceeded":
        details = run.usage.get("error_details") or {}
        problem = ProblemDetails(429, "Budget exceeded", run.error or "budget exceeded", kind="budget-exceeded",
                                 limit=details.get("limit"), used=details.get("used"), reset=details.get("reset"),
                                 run=run_to_json(run))
        return problem.response(location["location"])
    return ApiResponse.json(200, run_to_json(run), location)


async def start_run(svc: Services, request: ApiRequest) -> ApiResponse:
    """POST /api/flows/{flow}/runs — sync by default; `?wait=false` queues the run (202 + Location)."""
    tenant = await caller(svc, request)
    flow = checked(lambda: check_flow_id(request.route.get("flow")))
    inputs = run_inputs(request)
    if "text/event-stream" in (request.header("accept") or ""):
        return await streamed_run(svc, tenant, flow, inputs, caller_key_id(request))
    wait = request.query.get("wait", "true").lower() not in ("false", "0", "no")
    key = request.header("idempotency-key")
    if key and len(key) > MAX_IDEMPOTENCY_KEY:
        raise ProblemDetails(400, "Bad request", f"Idempotency-Key is longer than {MAX_IDEMPOTENCY_KEY} characters")
    started = await svc.runs.start(tenant.id, flow, inputs, "http", wait=wait,
                                   idempotency_key=key or None, request_hash=hashlib.sha256(request.body).hexdigest(),
                                   tenant=tenant, api_key_id=caller_key_id(request))
    return run_response(started.run, accepted=started.accepted)


RUNNING: set[asyncio.Task[Any]] = set()  # streamed runs go on when their client leaves: keep them referenced


async def streamed_run(svc: Services, tenant: Tenant, flow: str, inputs: dict[str, Any],
                       api_key_id: str | None) -> ApiResponse:
    """`Accept: text/event-stream`: the run's events as SSE — `step` ({id, status, duration_ms, usage}) when a step
    starts or finishes, `token` ({step, delta}) for streamed content, and a last `run` (the run object) or `error`
    (problem details). The run is a task of its own: a client that disconnects does not stop it, and its usage is
    recorded once, as for any run. Refusals (unknown flow, invalid input, …) are answered before the stream."""
    from shared.engine.observer import QueuedRunEvents

    prepared = await svc.runs.prepare(tenant.id, flow, inputs, "http", record=False, tenant=tenant,
                                      api_key_id=api_key_id)
    assert prepared.flow is not None  # a new run (no run id was given)
    events = QueuedRunEvents()
    task = asyncio.create_task(svc.runs.execute(prepared.run, prepared.flow, prepared.tenant, stored=prepared.stored,
                                                observer=events, in_request=True))
    RUNNING.add(task)

    def ended(done: asyncio.Task[Any]) -> None:
        RUNNING.discard(done)
        events.close()

    task.add_done_callback(ended)
    return ApiResponse(200, b"", {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-store",
                                  "location": f"/api/runs/{prepared.run.run_id}"}, stream=sse_events(events, task))


def sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


async def sse_events(events: Any, task: asyncio.Task[Any]) -> AsyncIterator[bytes]:
    from shared.functions.problems import problem_for
    from shared.services.runs import run_to_json

    async for event, data in events:
        yield sse(event, data)
    try:
        run = await asyncio.shield(task)  # a reader that goes away cancels this wait, never the run
    except Exception as exc:
        problem = problem_for(exc) or ProblemDetails(500, "Internal error", "the run failed; it has been logged")
        yield sse("error", json.loads(problem.response("").body))
        return
    yield sse("run", run_to_json(run))


async def get_run(svc: Services, request: ApiRequest) -> ApiResponse:
    """GET /api/runs/{run_id} — the caller's run; another tenant's is as unknown as a missing one."""
    from shared.services.runs import run_to_json

    tenant = await caller(svc, request)
    run = await svc.runs.find(tenant.id, checked(lambda: check_run_id(request.route.get("run_id"))))
    if run is None:
        raise ProblemDetails(404, "Not found", "no such run")
    return ApiResponse.json(200, run_to_json(run))


async def webhook(svc: Services, request: ApiRequest) -> ApiResponse:
    """POST /api/hooks/{tenant}/{flow} — signed; the whole JSON body is the flow input `payload`."""
    if len(request.body) > MAX_BODY_BYTES:
        raise ProblemDetails(413, "Payload too large", f"the body is over {MAX_BODY_BYTES} bytes")
    tenant_id = checked(lambda: check_tenant_segment(request.route.get("tenant")))
    flow = checked(lambda: check_flow_id(request.route.get("flow")))
    tenant = await webhook_tenant(svc, request, tenant_id)
    payload = parse_json(request)
    started = await svc.runs.start(tenant.id, flow, {"payload": payload}, "webhook",
                                   wait=True, tenant=tenant)
    return run_response(started.run)


async def usage_report(svc: Services, request: ApiRequest) -> ApiResponse:
    """GET /api/usage — the caller's tenant; from, to, group_by=day|model|flow|key, format=json|csv."""
    tenant = await caller(svc, request)
    query = usage_query(request, tenant.id, USAGE_GROUPS)
    return summary_response(await svc.usage.summary(query), request)


async def admin_usage(svc: Services, request: ApiRequest) -> ApiResponse:
    """GET /api/admin/usage — the operator's view of every tenant (or ?tenant=); group_by may be tenant."""
    from shared.storage.ports import GROUP_KEYS

    require_operator(svc, request)
    query = usage_query(request, request.query.get("tenant") or None, GROUP_KEYS)
    return summary_response(await svc.usage.summary(query), request)


def usage_query(request: ApiRequest, tenant_id: str | None, allowed: tuple[str, ...],
                default_from: str | None = None, default_to: str | None = None) -> UsageQuery:
    """Raises UsageQueryError (422, naming the field)."""
    from shared.services.usage import UsageQuery

    return UsageQuery.parse(tenant_id, request.query.get("from") or default_from,
                            request.query.get("to") or default_to, request.query.get("group_by"), allowed)


def summary_response(summary: dict[str, Any], request: ApiRequest) -> ApiResponse:
    from shared.services.usage import to_csv

    fmt = request.query.get("format", "json")
    if fmt == "csv":
        return ApiResponse(200, to_csv(summary).encode(), {"content-type": "text/csv; charset=utf-8"})
    if fmt != "json":
        raise ProblemDetails(422, "Invalid query", "format must be json or csv",
                             errors=[{"field": "format", "message": "must be json or csv"}])
    return ApiResponse.json(200, summary)


async def health(svc: Services, request: ApiRequest) -> ApiResponse:
    """GET /api/health — each component `ok`, `down` or `not_configured`; 503 (problem details, Retry-After) only
    when a configured component is down."""
    from shared.functions.problems import STORE_RETRY_AFTER
    from shared.services.health import check_health

    report = await check_health(svc.stores, svc.queue)
    components = {name: {k: v for k, v in dataclasses.asdict(c).items() if v is not None}
                  for name, c in report.components.items()}
    if report.healthy:
        return ApiResponse.json(200, {"status": "ok", "components": components})
    down = ", ".join(name for name, c in report.components.items() if c.status == "down")
    raise ProblemDetails(503, "Unhealthy", f"down: {down}", headers={"retry-after": STORE_RETRY_AFTER},
                         components=components)
