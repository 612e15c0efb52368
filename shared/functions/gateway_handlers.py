"""Handlers of the OpenAI-compatible gateway (ApiRequest in, ApiResponse out) and of the operator's alias routes.

Gateway answers use the OpenAI error shape `{"error": {message, type, code, param}}` with the status that makes the
openai SDK raise the matching class, and every one of them (errors included) carries `x-tenantflow-request-id`.
The tenant's API key may come as `Authorization: Bearer <key>`, `api-key: <key>` or `x-api-key: <key>`."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from shared.functions.api_messages import ApiRequest, ApiResponse
from shared.functions.problems import ProblemDetails
from shared.gateway.errors import GatewayError, GatewayReply

if TYPE_CHECKING:
    from shared.bootstrap import Services
    from shared.storage.models import Tenant

log = logging.getLogger(__name__)
REQUEST_ID_HEADER = "x-tenantflow-request-id"
MAX_GATEWAY_BODY = 16 * 1024 * 1024  # images as data URLs make large requests
GatewayHandler = Callable[["Services", ApiRequest, str], Awaitable[ApiResponse]]


def new_request_id() -> str:
    return "gw-" + uuid.uuid4().hex


def openai_error(error: GatewayError, request_id: str) -> ApiResponse:
    return ApiResponse.json(error.status, error.body(), {**error.headers, REQUEST_ID_HEADER: request_id})


async def gateway_answer(request: ApiRequest, handler: GatewayHandler) -> ApiResponse:
    """Runs a gateway handler; every failure becomes an OpenAI error answer (never a traceback)."""
    from shared.functions.problems import problem_for
    from shared.functions.runtime import services

    request_id = new_request_id()
    try:
        response = await handler(await services(), request, request_id)
    except GatewayError as exc:
        return openai_error(exc, request_id)
    except Exception as exc:
        problem = problem_for(exc)
        if problem is None:
            log.exception("unhandled error in gateway %s %s (%s)", request.method, request.path, request_id)
            problem = ProblemDetails(500, "Internal error", "the request failed; it has been logged")
        error = GatewayError(problem.status, problem.detail, "server_error", problem.kind, headers=problem.headers)
        return openai_error(error, request_id)
    response.headers[REQUEST_ID_HEADER] = request_id
    return response


def api_key_of(request: ApiRequest) -> str | None:
    authorization = request.header("authorization") or ""
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return request.header("api-key") or request.header("x-api-key")


async def gateway_tenant(svc: Services, request: ApiRequest) -> Tenant:
    """The active tenant whose API key the request carries (the tenants service's cached key lookup)."""
    api_key = api_key_of(request)
    tenant = await svc.tenants.authenticate(api_key) if api_key else None
    if tenant is None:
        raise GatewayError(401, "Incorrect or missing API key: send the tenant's Tenantflow API key as "
                           "`Authorization: Bearer <key>`, `api-key` or `x-api-key`.", code="invalid_api_key")
    if tenant.status != "active":
        raise GatewayError(403, f"tenant {tenant.id} is suspended", "permission_error", "tenant_suspended")
    return tenant


def request_body(request: ApiRequest) -> dict[str, Any]:
    if len(request.body) > MAX_GATEWAY_BODY:
        raise GatewayError(413, f"the request body is larger than {MAX_GATEWAY_BODY} bytes", code="body_too_large")
    try:
        body = json.loads(request.body)
    except (ValueError, RecursionError):
        raise GatewayError(400, "the request body is not valid JSON", code="invalid_json") from None
    if not isinstance(body, dict):
        raise GatewayError(400, "the request body must be a JSON object", code="invalid_json")
    return body


def reply_response(reply: GatewayReply) -> ApiResponse:
    return ApiResponse(reply.status, reply.body, {"content-type": reply.content_type, **reply.headers},
                       stream=reply.stream)


async def chat_completions(svc: Services, request: ApiRequest, request_id: str) -> ApiResponse:
    """`POST /api/v1/chat/completions`: the alias is the body's `model`."""
    tenant = await gateway_tenant(svc, request)
    body = request_body(request)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise GatewayError(400, "'model' is required: one of the tenant's model aliases (GET /api/v1/models)",
                           param="model", code="missing_model")
    return reply_response(await svc.gateway.chat(tenant.id, request_id, model, body))


async def azure_chat_completions(svc: Services, request: ApiRequest, request_id: str) -> ApiResponse:
    """`POST /api/openai/deployments/{alias}/chat/completions?api-version=…`: the alias is the deployment."""
    tenant = await gateway_tenant(svc, request)
    if not request.query.get("api-version"):
        raise GatewayError(400, "Missing required query parameter: api-version", param="api-version",
                           code="missing_api_version")
    body = request_body(request)
    return reply_response(await svc.gateway.chat(tenant.id, request_id, request.route.get("alias", ""), body))


async def list_models(svc: Services, request: ApiRequest, request_id: str) -> ApiResponse:
    """`GET /api/v1/models`: the caller's aliases, as the OpenAI model list."""
    tenant = await gateway_tenant(svc, request)
    aliases = await svc.stores.aliases.list(tenant.id)
    return ApiResponse.json(200, {"object": "list", "data": [
        {"id": a.alias, "object": "model", "created": int(a.updated_at.timestamp()), "owned_by": tenant.id}
        for a in aliases]})


