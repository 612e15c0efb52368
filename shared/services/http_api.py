"""The HTTP API as plain async handlers (no azure.functions): ApiRequest in, ApiResponse out.

Tenant identity comes only from authentication — an API key in `x-api-key`, or an HMAC-signed webhook — never
from the body. Errors are RFC 9457 problem details; nothing here ever answers a traceback or a secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.engine.errors import FlowError, InputError
from shared.services.api_messages import ApiRequest, ApiResponse
from shared.services.catalog import FlowNotFound
from shared.services.run_queue import RunQueue
from shared.services.runs import RunRefused, RunService, run_to_json
from shared.services.tenants import TenantService
from shared.storage.models import RunRecord, Tenant
from shared.storage.ports import Stores

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
    def __init__(self, stores: Stores, runs: RunService, tenants: TenantService, queue: RunQueue) -> None:
        self.stores = stores
        self.runs = runs
        self.tenants = tenants
        self.queue = queue

    async def handle(self, handler: str, request: ApiRequest) -> ApiResponse:
        """Runs one handler, mapping every failure to problem details."""
        try:
            return await getattr(self, handler)(request)
        except Problem as problem:
            return problem.response(request.path)
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
                return self.run_response(previous, accepted=not wait)
        flow = request.route.get("flow", "")
        # with a key, the run id derives from (tenant, key): two concurrent requests create one run
        run_id = uuid.uuid5(uuid.NAMESPACE_URL, f"tenantflow:{tenant.id}:{key}").hex if key else None
        options = {"idempotency_key": key, "request_hash": body_hash, "run_id": run_id}
        try:
            if wait:
                run = await self.runs.run(tenant.id, flow, inputs, "http", **options)
                if run.request_hash != body_hash:
                    raise Problem(409, "Idempotency key reused", "this Idempotency-Key was used with another request")
                return self.run_response(run)
            prepared = await self.runs.prepare(tenant.id, flow, inputs, "http", status="queued", **options)
            if prepared.run.request_hash != body_hash:
                raise Problem(409, "Idempotency key reused", "this Idempotency-Key was used with another request")
            if prepared.created:
                await self.queue.send({"run_id": prepared.run.run_id, "tenant": tenant.id, "flow": flow,
                                       "inputs": prepared.run.inputs, "trigger": "http"})
            return self.run_response(prepared.run, accepted=True)
        except (FlowNotFound, FlowError, InputError, RunRefused) as exc:
            raise problem_for(exc) from None

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
