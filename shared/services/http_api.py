"""The HTTP API as plain async handlers (no azure.functions): ApiRequest in, ApiResponse out.

Tenant identity comes only from authentication — an API key in `x-api-key`, or an HMAC-signed webhook — never
from the body. Errors are RFC 9457 problem details; nothing here ever answers a traceback or a secret.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.engine.errors import FlowError, InputError
from shared.secret import Secret
from shared.services.api_messages import ApiRequest, ApiResponse
from shared.services.catalog import FlowNotFound
from shared.services.run_queue import QueueNotConfigured, RunQueue
from shared.services.runs import RunNotCompleted, RunRefused, RunService, run_to_json
from shared.services.tenants import TenantService
from shared.services.usage import UsageQuery, UsageQueryError, UsageService, to_csv
from shared.storage.models import RunRecord, Tenant
from shared.storage.ports import GROUP_KEYS, Stores, StoreUnavailable
from shared.web.dashboard import render_dashboard

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 1024 * 1024
WEBHOOK_TOLERANCE = 300
PROBLEM_TYPE = "https://tenantflow.dev/problems/"


class Problem(Exception):
    """An error answer: RFC 9457 problem details."""

    def __init__(self, status: int, title: str, detail: str, kind: str | None = None,
                 errors: list[dict[str, str]] | None = None, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail
        self.kind = kind or title.lower().replace(" ", "-")
        self.errors, self.headers, self.extra = errors, headers or {}, extra

    def response(self, instance: str) -> ApiResponse:
        body: dict[str, Any] = {"type": PROBLEM_TYPE + self.kind, "title": self.title, "status": self.status,
                                "detail": self.detail, "instance": instance, **self.extra}
        if self.errors:
            body["errors"] = self.errors
        return ApiResponse(self.status, json.dumps(body, ensure_ascii=False).encode(),
                           {"content-type": "application/problem+json", **self.headers})


def unauthenticated(detail: str = "missing or invalid API key (x-api-key)") -> Problem:
    return Problem(401, "Unauthenticated", detail, headers={"www-authenticate": 'ApiKey header="x-api-key"'})


class HttpApi:
    def __init__(self, stores: Stores, runs: RunService, tenants: TenantService, queue: RunQueue,
                 usage: UsageService, operator_key: Secret | None = None) -> None:
        self.stores = stores
        self.runs = runs
        self.tenants = tenants
        self.queue = queue
        self.usage = usage
        self.operator_key = operator_key

    async def handle(self, handler: str, request: ApiRequest) -> ApiResponse:
        """Runs one handler, mapping every failure to problem details."""
        try:
            return await getattr(self, handler)(request)
        except Problem as problem:
            return problem.response(request.path)
        except RunNotCompleted as exc:
            if exc.cause == "store_unavailable":
                return Problem(503, "Store unavailable", f"{exc}; retry later", headers={"retry-after": "5"},
                               run_id=exc.run.run_id).response(request.path)
            return Problem(500, "Internal error", "the run was interrupted by an internal error; it has been logged",
                           run_id=exc.run.run_id).response(request.path)
        except StoreUnavailable as exc:
            return Problem(503, "Store unavailable", f"{exc}; retry later",
                           headers={"retry-after": "5"}).response(request.path)
        except Exception:  # never a traceback to the caller
            log.exception("unhandled error in %s %s", request.method, request.path)
            return Problem(500, "Internal error", "the request failed; it has been logged").response(request.path)

    # --- authentication ------------------------------------------------------------------------------------------
    async def caller(self, request: ApiRequest) -> Tenant:
        api_key = request.header("x-api-key")
        tenant = await self.tenants.authenticate(api_key) if api_key else None
        if tenant is None:
            raise unauthenticated()
        if tenant.status != "active":
            raise Problem(403, "Tenant suspended", f"tenant {tenant.id} is suspended")
        return tenant

    def is_operator(self, request: ApiRequest) -> bool:
        given = request.header("x-operator-key")
        if not given or self.operator_key is None or not self.operator_key.reveal():
            return False
        return hmac.compare_digest(given.encode(), self.operator_key.reveal().encode())

    async def webhook_tenant(self, request: ApiRequest, tenant_id: str) -> Tenant:
        header = request.header("x-tenantflow-signature") or ""
        parts = dict(p.strip().split("=", 1) for p in header.split(",") if "=" in p)
        stamp, signature = parts.get("t", ""), parts.get("v1", "")
        if not stamp.isdigit() or not signature:
            raise unauthenticated("missing or malformed x-tenantflow-signature (t=<unix seconds>,v1=<hex>)")
        if abs(time.time() - int(stamp)) > WEBHOOK_TOLERANCE:
            raise unauthenticated("webhook signature timestamp is outside the ±300 s window")
        tenant = await self.stores.tenants.get(tenant_id)
        if tenant is None:
            raise unauthenticated("invalid webhook signature")
        secret = await self.tenants.webhook_secret(tenant_id)
        expected = hmac.new(secret.reveal().encode(), stamp.encode() + b"." + request.body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature.lower()):
            raise unauthenticated("invalid webhook signature")
        expires = datetime.fromtimestamp(int(stamp), UTC) + timedelta(seconds=WEBHOOK_TOLERANCE)
        if not await self.stores.replay.first_use(tenant_id, signature.lower(), expires):
            raise unauthenticated("webhook signature already used (replay)")
        if tenant.status != "active":
            raise Problem(403, "Tenant suspended", f"tenant {tenant.id} is suspended")
        return tenant

    # --- handlers -----------------------------------------------------------------------------------------------
    async def start_run(self, request: ApiRequest) -> ApiResponse:
        tenant = await self.caller(request)
        body = parse_json(request)
        if not isinstance(body, dict):
            raise Problem(422, "Invalid request", "the body must be a JSON object like {\"inputs\": {…}}",
                          errors=[{"field": "body", "message": "must be an object"}])
        unknown = sorted(set(body) - {"inputs"})
        if unknown:
            raise Problem(422, "Invalid request", f"unknown field {unknown[0]!r}",
                          errors=[{"field": name, "message": "unknown field"} for name in unknown])
        inputs = body.get("inputs", {})
        if not isinstance(inputs, dict):
            raise Problem(422, "Invalid input", "inputs must be an object",
                          errors=[{"field": "inputs", "message": "must be an object"}])
        wait = request.query.get("wait", "true").lower() not in ("false", "0", "no")
        key = request.header("idempotency-key")
        body_hash = hashlib.sha256(request.body).hexdigest()
        if key:
            if len(key) > 200:
                raise Problem(400, "Bad request", "Idempotency-Key is longer than 200 characters")
            previous = await self.stores.runs.find_by_idempotency_key(tenant.id, key)
            if previous is not None:
                if previous.request_hash != body_hash or previous.flow_id != request.route.get("flow"):
                    raise Problem(409, "Idempotency key reused", "this Idempotency-Key was used with another request")
                if previous.status == "queued" and not wait:  # its message may have been lost (503): send again
                    await self.enqueue(previous, keep_on_failure=True)
                return self.run_response(previous, accepted=not wait)
        flow = request.route.get("flow", "")
        # with a key, the run id derives from (tenant, key): two concurrent requests create one run
        run_id = uuid.uuid5(uuid.NAMESPACE_URL, f"tenantflow:{tenant.id}:{key}").hex if key else None
        options: dict[str, Any] = {"idempotency_key": key, "request_hash": body_hash, "run_id": run_id}
        try:
            if wait:
                run = await self.runs.run(tenant.id, flow, inputs, "http", **options)
                if run.request_hash != body_hash:
                    raise Problem(409, "Idempotency key reused", "this Idempotency-Key was used with another request")
                return self.run_response(run)
            prepared = await self.runs.prepare(tenant.id, flow, inputs, "http", status="queued", **options)
            if prepared.run.request_hash != body_hash:
                raise Problem(409, "Idempotency key reused", "this Idempotency-Key was used with another request")
            if prepared.run.status == "queued":  # new, or a concurrent twin's: the worker dedupes copies
                await self.enqueue(prepared.run, keep_on_failure=key is not None)
            return self.run_response(prepared.run, accepted=True)
        except (FlowNotFound, FlowError, InputError, RunRefused) as exc:
            raise problem_for(exc) from None

    async def enqueue(self, run: RunRecord, keep_on_failure: bool) -> None:
        """Sends the run's message. If the queue refuses it, the answer is 503 and the run stays `queued` when the
        client can retry with its Idempotency-Key (the retry sends it again); otherwise it is marked `rejected`."""
        try:
            await self.queue.send({"run_id": run.run_id, "tenant": run.tenant_id, "flow": run.flow_id,
                                   "inputs": run.inputs, "trigger": run.trigger})
        except Exception as exc:
            # the text of a transport error may hold a connection string: only QueueNotConfigured's is shown
            log.error("run %s could not be enqueued: %s", run.run_id, type(exc).__name__)
            reason = str(exc) if isinstance(exc, QueueNotConfigured) else "the run queue cannot be reached"
            if not keep_on_failure and await self.stores.runs.transition(run.tenant_id, run.run_id, ("queued",),
                                                                         "rejected"):
                stored = await self.stores.runs.get(run.tenant_id, run.run_id) or run
                stored.status, stored.error, stored.finished_at = "rejected", reason, datetime.now(UTC)
                await self.stores.runs.save(stored)
            retry = "retry with the same Idempotency-Key" if keep_on_failure else "retry later"
            raise Problem(503, "Queue unavailable", f"{reason}; {retry}", headers={"retry-after": "5"},
                          run_id=run.run_id) from None

    def run_response(self, run: RunRecord, accepted: bool = False) -> ApiResponse:
        location = {"location": f"/api/runs/{run.run_id}"}
        if accepted:
            return ApiResponse.json(202, run_to_json(run), location)
        if run.usage.get("error_code") == "budget_exceeded":
            details = run.usage.get("error_details") or {}
            problem = Problem(429, "Budget exceeded", run.error or "budget exceeded", kind="budget-exceeded",
                              limit=details.get("limit"), used=details.get("used"), reset=details.get("reset"),
                              run=run_to_json(run))
            return problem.response(location["location"])
        return ApiResponse.json(200, run_to_json(run), location)

    async def get_run(self, request: ApiRequest) -> ApiResponse:
        tenant = await self.caller(request)
        run = await self.stores.runs.get(tenant.id, request.route.get("run_id", ""))
        if run is None:  # another tenant's run is as unknown as a missing one
            raise Problem(404, "Not found", "no such run")
        return ApiResponse.json(200, run_to_json(run))

    async def webhook(self, request: ApiRequest) -> ApiResponse:
        tenant_id, flow = request.route.get("tenant", ""), request.route.get("flow", "")
        if len(request.body) > MAX_BODY_BYTES:
            raise Problem(413, "Payload too large", f"the body is over {MAX_BODY_BYTES} bytes")
        tenant = await self.webhook_tenant(request, tenant_id)
        payload = parse_json(request)
        try:
            run = await self.runs.run(tenant.id, flow, {"payload": payload}, "webhook")
        except (FlowNotFound, FlowError, InputError, RunRefused) as exc:
            raise problem_for(exc) from None
        return self.run_response(run)

    async def usage_report(self, request: ApiRequest) -> ApiResponse:
        """GET /api/usage — the caller's tenant; from, to, group_by=day|model|flow, format=json|csv."""
        tenant = await self.caller(request)
        query = self.usage_query(request, tenant.id, ("day", "model", "flow"))
        return self.summary_response(await self.usage.summary(query), request)

    async def admin_usage(self, request: ApiRequest) -> ApiResponse:
        """GET /api/admin/usage — the operator's view of every tenant (or ?tenant=); group_by may be tenant."""
        if not self.is_operator(request):
            raise Problem(401, "Unauthenticated", "missing or invalid operator key (x-operator-key)")
        query = self.usage_query(request, request.query.get("tenant") or None, GROUP_KEYS)
        return self.summary_response(await self.usage.summary(query), request)

    async def dashboard(self, request: ApiRequest) -> ApiResponse:
        """GET /api/dashboard — HTML for the caller's tenant (x-api-key), or for the operator (x-operator-key):
        all tenants, or one with ?tenant=. Period: ?from=&to= (default: this calendar month)."""
        operator = self.is_operator(request)
        tenant_id = request.query.get("tenant") or None if operator else (await self.caller(request)).id
        today = datetime.now(UTC).date()
        query = self.usage_query(request, tenant_id, GROUP_KEYS,
                                 default_from=today.replace(day=1).isoformat(), default_to=today.isoformat())
        assert query.start is not None and query.end is not None
        keys = ["model", "flow"] + (["tenant"] if operator and tenant_id is None else [])
        summaries = {key: await self.usage.summary(dataclasses.replace(query, group_by=key))
                     for key in ["day", *keys]}
        budget = await self.usage.budget_status(tenant_id) if tenant_id else None
        html = render_dashboard(
            title=f"Usage of {tenant_id}" if tenant_id else "Usage of all tenants (operator)",
            start=query.start, end=query.end, totals=summaries["day"]["totals"], by_day=summaries["day"]["rows"],
            tables=[(key, summaries[key]["rows"]) for key in keys], budget=budget,
            export_query={k: v for k, v in (("from", query.start.isoformat()), ("to", query.end.isoformat()),
                                            ("tenant", tenant_id if operator and tenant_id else "")) if v},
            export_path="/api/admin/usage" if operator else "/api/usage")
        return ApiResponse(200, html.encode(), {"content-type": "text/html; charset=utf-8",
                                                "cache-control": "no-store"})

    def usage_query(self, request: ApiRequest, tenant_id: str | None, allowed: tuple[str, ...],
                    default_from: str | None = None, default_to: str | None = None) -> UsageQuery:
        try:
            return UsageQuery.parse(tenant_id, request.query.get("from") or default_from,
                                    request.query.get("to") or default_to, request.query.get("group_by"), allowed)
        except UsageQueryError as exc:
            raise Problem(422, "Invalid query", str(exc), errors=[{"field": exc.field, "message": str(exc)}]) from None

    def summary_response(self, summary: dict[str, Any], request: ApiRequest) -> ApiResponse:
        fmt = request.query.get("format", "json")
        if fmt == "csv":
            return ApiResponse(200, to_csv(summary).encode(), {"content-type": "text/csv; charset=utf-8"})
        if fmt != "json":
            raise Problem(422, "Invalid query", "format must be json or csv",
                          errors=[{"field": "format", "message": "must be json or csv"}])
        return ApiResponse.json(200, summary)

    async def health(self, request: ApiRequest) -> ApiResponse:
        checks: dict[str, Any] = {}
        for name, probe in (("store", self.stores.health.ping), ("queue", self.queue.ping)):
            try:
                await probe()
                checks[name] = {"ok": True}
            except Exception as exc:  # report the kind of failure, never its text (it may hold a DSN)
                checks[name] = {"ok": False, "error": type(exc).__name__}
        checks["store"]["backend"] = self.stores.backend
        healthy = all(c["ok"] for c in checks.values())
        return ApiResponse.json(200 if healthy else 503, {"status": "ok" if healthy else "degraded", **checks})


def parse_json(request: ApiRequest) -> Any:
    if len(request.body) > MAX_BODY_BYTES:
        raise Problem(413, "Payload too large", f"the body is over {MAX_BODY_BYTES} bytes")
    if not request.body.strip():
        return {}
    try:
        return json.loads(request.body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Problem(400, "Bad JSON", f"the body is not valid JSON: {getattr(exc, 'msg', 'not UTF-8')}") from None


def problem_for(exc: Exception) -> Problem:
    if isinstance(exc, FlowNotFound):
        return Problem(404, "Flow not found", str(exc))
    if isinstance(exc, InputError):
        return Problem(422, "Invalid input", str(exc),
                       errors=[{"field": name, "message": message} for name, message in exc.errors.items()])
    if isinstance(exc, FlowError):
        return Problem(422, "Invalid flow", "the flow definition is invalid; run `tenantflow validate`",
                       errors=[{"field": p.field or "flow", "message": str(p)} for p in exc.problems])
    if isinstance(exc, RunRefused) and exc.code == "tenant_suspended":
        return Problem(403, "Tenant suspended", str(exc))
    return Problem(401, "Unauthenticated", str(exc))
