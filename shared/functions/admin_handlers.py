"""The operator HTTP API's handlers (routes in shared.functions.admin_http): ApiRequest in, ApiResponse out.

Every handler first requires the operator (`x-operator-key`, or the Easy Auth app role Tenantflow.Operator), then
parses what HTTP carries and calls the same `LocalOperator` method the CLI calls (shared.services.operator), so the
two validate alike. A refusal is problem details naming the field: 404 for an unknown tenant, key, credential or
schedule; 409 for a duplicate (or a suspended tenant's new schedule); 422 for an invalid value. Secrets go in
request bodies only; an answer holds a secret once, when a new API key is issued.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from shared.functions.api_messages import ApiRequest, ApiResponse
from shared.functions.http_auth import require_operator
from shared.functions.http_handlers import checked, parse_json
from shared.functions.problems import ProblemDetails
from shared.functions.request_checks import check_tenant_segment
from shared.services.operator import CredentialInput, IssuedKey, LocalOperator, OperationRefused

if TYPE_CHECKING:
    from shared.bootstrap import Services

OperatorHandler = Callable[[LocalOperator, ApiRequest], Awaitable[ApiResponse]]
STATUS = {"missing": 404, "exists": 409, "conflict": 409, "invalid": 422}
TITLES = {404: "Not found", 409: "Conflict", 422: "Invalid request"}


def operator_only(handler: OperatorHandler) -> Callable[[Services, ApiRequest], Awaitable[ApiResponse]]:
    """Requires the operator, and turns OperationRefused into problem details naming its field."""

    async def handle(svc: Services, request: ApiRequest) -> ApiResponse:
        require_operator(svc, request)
        try:
            return await handler(LocalOperator(svc), request)
        except OperationRefused as exc:
            status = STATUS[exc.reason]
            raise ProblemDetails(status, TITLES[status], str(exc),
                                 errors=[{"field": exc.field, "message": str(exc)}]) from None

    handle.__doc__ = handler.__doc__
    return handle


def tenant_of(request: ApiRequest) -> str:
    return checked(lambda: check_tenant_segment(request.route.get("tenant")))


def json_object(request: ApiRequest, fields: tuple[str, ...]) -> dict[str, Any]:
    """The body as a JSON object holding no field but `fields`."""
    body = parse_json(request)
    if not isinstance(body, dict):
        raise OperationRefused(f"the body must be a JSON object with {', '.join(fields)}", "body")
    for name in body:
        if name not in fields:
            raise OperationRefused(f"unknown field {str(name)[:80]!r}", str(name)[:80])
    return body


def text_field(body: dict[str, Any], name: str, required: bool = True) -> str | None:
    """A string field; its content is the service's to judge (so the API refuses what the CLI refuses, alike)."""
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise OperationRefused(f"{name} is required and must be a string", name)
    return value


def key_answer(key: IssuedKey) -> dict[str, str]:
    return {"key_id": key.key_id, "key": key.key.reveal()}


def no_content() -> ApiResponse:
    return ApiResponse(204, b"")


# --- tenants and API keys -------------------------------------------------------------------------------------------
@operator_only
async def add_tenant(operator: LocalOperator, request: ApiRequest) -> ApiResponse:
    """POST /api/admin/tenants {"id", "name"} — 201: the tenant and its first API key {key_id, key} (shown once)."""
    body = json_object(request, ("id", "name"))
    added = await operator.add_tenant(text_field(body, "id") or "", text_field(body, "name", required=False))
    return ApiResponse.json(201, {**added.tenant, **key_answer(added.key)},
                            {"location": f"/api/admin/tenants/{added.tenant['id']}", "cache-control": "no-store"})


@operator_only
async def list_tenants(operator: LocalOperator, request: ApiRequest) -> ApiResponse:
    """GET /api/admin/tenants — [{id, name, status, created_at}]."""
    return ApiResponse.json(200, await operator.list_tenants())


@operator_only
async def suspend_tenant(operator: LocalOperator, request: ApiRequest) -> ApiResponse:
    """POST /api/admin/tenants/{tenant}/suspend — its runs and API calls are refused."""
    return ApiResponse.json(200, await operator.suspend_tenant(tenant_of(request)))


@operator_only
async def activate_tenant(operator: LocalOperator, request: ApiRequest) -> ApiResponse:
    """POST /api/admin/tenants/{tenant}/activate."""
    return ApiResponse.json(200, await operator.activate_tenant(tenant_of(request)))


@operator_only
async def create_key(operator: LocalOperator, request: ApiRequest) -> ApiResponse:
    """POST /api/admin/tenants/{tenant}/keys — 201 {key_id, key}; the key is shown this once."""
    key = await operator.create_key(tenant_of(request))
    return ApiResponse.json(201, key_answer(key), {"cache-control": "no-store"})


@operator_only
async def list_keys(operator: LocalOperator, request: ApiRequest) -> ApiResponse:
    """GET /api/admin/tenants/{tenant}/keys — [{key_id, status, created_at, revoked_at}], never the keys."""
    return ApiResponse.json(200, await operator.list_keys(tenant_of(request)))


@operator_only
async def revoke_key(operator: LocalOperator, request: ApiRequest) -> ApiResponse:
    """DELETE /api/admin/tenants/{tenant}/keys/{key_id} — 204."""
    await operator.revoke_key(tenant_of(request), request.route.get("key_id", ""))
    return no_content()


# --- credentials ------------------------------------------------------------------------------------------------------
@operator_only
async def put_credential(operator: LocalOperator, request: ApiRequest) -> ApiResponse:
    """PUT /api/admin/tenants/{tenant}/credentials/{name} {kind, endpoint, api_version, auth, api_key, config} — the
    stored credential, secrets as ******."""
    tenant = tenant_of(request)
    credential = CredentialInput.from_json(parse_json(request))
    return ApiResponse.json(200, await operator.set_credential(tenant, request.route.get("name", ""), credential))


@operator_only
async def get_credential(operator: LocalOperator, request: ApiRequest) -> ApiResponse:
    """GET /api/admin/tenants/{tenant}/credentials/{name} — secrets as ******, never their values."""
    return ApiResponse.json(200, await operator.get_credential(tenant_of(request), request.route.get("name", "")))


@operator_only
async def list_credentials(operator: LocalOperator, request: ApiRequest) -> ApiResponse:
    """GET /api/admin/tenants/{tenant}/credentials."""
    return ApiResponse.json(200, await operator.list_credentials(tenant_of(request)))


@operator_only
async def delete_credential(operator: LocalOperator, request: ApiRequest) -> ApiResponse:
    """DELETE /api/admin/tenants/{tenant}/credentials/{name} — 204."""
    await operator.delete_credential(tenant_of(request), request.route.get("name", ""))
    return no_content()


# --- budgets and schedules ------------------------------------------------------------------------------------------
@operator_only
async def put_budget(operator: LocalOperator, request: ApiRequest) -> ApiResponse:
    """PUT /api/admin/tenants/{tenant}/budget {monthly_tokens, monthly_cost} — replaces both limits (a missing one is
    no limit); answers the budget status."""
    tenant = tenant_of(request)
    body = json_object(request, ("monthly_tokens", "monthly_cost"))
    tokens, cost = body.get("monthly_tokens"), body.get("monthly_cost")
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int)):
        raise OperationRefused("monthly_tokens: must be a whole number", "monthly_tokens")
    if cost is not None and (isinstance(cost, bool) or not isinstance(cost, (str, int, float))):
        raise OperationRefused("monthly_cost: must be a decimal string or number, e.g. \"25.00\"", "monthly_cost")
    return ApiResponse.json(200, await operator.set_budget(tenant, tokens, None if cost is None else str(cost)))


@operator_only
async def get_budget(operator: LocalOperator, request: ApiRequest) -> ApiResponse:
    """GET /api/admin/tenants/{tenant}/budget — limits, and what this month used and holds reserved."""
    return ApiResponse.json(200, await operator.budget(tenant_of(request)))


@operator_only
async def add_schedule(operator: LocalOperator, request: ApiRequest) -> ApiResponse:
    """POST /api/admin/schedules {tenant, flow, cron, inputs: {name: text}} — 201: the schedule."""
    body = json_object(request, ("tenant", "flow", "cron", "inputs"))
    inputs = body.get("inputs") or {}
    if not isinstance(inputs, dict):
        raise OperationRefused("inputs must be an object of strings (as --input name=value gives)", "inputs")
    for name, value in inputs.items():
        if not isinstance(value, str):
            raise OperationRefused(f"inputs.{name}: must be a string (as --input {name}=value gives)",
                                   f"inputs.{name}")
    schedule = await operator.add_schedule(text_field(body, "tenant") or "", text_field(body, "flow") or "",
                                           text_field(body, "cron") or "", inputs)
    return ApiResponse.json(201, schedule, {"location": f"/api/admin/schedules/{schedule['id']}"})


@operator_only
async def list_schedules(operator: LocalOperator, request: ApiRequest) -> ApiResponse:
    """GET /api/admin/schedules[?tenant=T] — every schedule, or one tenant's."""
    tenant = request.query.get("tenant") or None
    return ApiResponse.json(200, await operator.list_schedules(tenant))


@operator_only
async def remove_schedule(operator: LocalOperator, request: ApiRequest) -> ApiResponse:
    """DELETE /api/admin/schedules/{schedule_id} (or /api/admin/schedules?id=) — 204."""
    schedule_id = request.route.get("schedule_id") or request.query.get("id") or ""
    if not schedule_id:
        raise OperationRefused("name the schedule: /api/admin/schedules/{id} or ?id=", "id")
    await operator.remove_schedule(schedule_id)
    return no_content()


# --- gateway model aliases (routes in shared.functions.gateway_http) ------------------------------------------------
@operator_only
async def put_model(operator: LocalOperator, request: ApiRequest) -> ApiResponse:
    """PUT /api/admin/tenants/{tenant}/models/{alias} {credential, deployment, price_as} — the alias."""
    body = json_object(request, ("credential", "deployment", "price_as"))
    return ApiResponse.json(200, await operator.set_model(
        tenant_of(request), request.route.get("alias", ""), text_field(body, "credential") or "",
        text_field(body, "deployment") or "", text_field(body, "price_as", required=False)))


@operator_only
async def get_model(operator: LocalOperator, request: ApiRequest) -> ApiResponse:
    """GET /api/admin/tenants/{tenant}/models/{alias}."""
    return ApiResponse.json(200, await operator.get_model(tenant_of(request), request.route.get("alias", "")))


@operator_only
async def delete_model(operator: LocalOperator, request: ApiRequest) -> ApiResponse:
    """DELETE /api/admin/tenants/{tenant}/models/{alias} — 204."""
    await operator.remove_model(tenant_of(request), request.route.get("alias", ""))
    return no_content()


@operator_only
async def list_models(operator: LocalOperator, request: ApiRequest) -> ApiResponse:
    """GET /api/admin/tenants/{tenant}/models — {"models": [...]}."""
    return ApiResponse.json(200, {"models": await operator.list_models(tenant_of(request))})
