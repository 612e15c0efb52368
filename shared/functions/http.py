"""HTTP trigger functions (route prefix `api`, see host.json). Each turns the HttpRequest into an ApiRequest,
calls its typed handler in shared.functions.http_handlers and turns the answer into an HttpResponse. Every
failure becomes problem details: a domain error its status, a store that cannot be used (even while the
services are first built) 503 with Retry-After, and anything else a logged 500 without details."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import azure.functions as func

from shared.functions import dashboard_handlers
from shared.functions import http_handlers as handlers
from shared.functions.api_messages import ApiRequest, ApiResponse
from shared.functions.problems import ProblemDetails, problem_for
from shared.functions.routes import ADMIN
from shared.functions.runtime import services

if TYPE_CHECKING:
    from shared.bootstrap import Services

Handler = Callable[["Services", ApiRequest], Awaitable[ApiResponse]]
bp = func.Blueprint()
log = logging.getLogger(__name__)


def to_api(req: func.HttpRequest) -> ApiRequest:
    """No copies: the request's own headers (case-insensitive), query and route mappings are passed on."""
    path = "/" + req.url.split("://", 1)[-1].split("/", 1)[-1].split("?", 1)[0]
    return ApiRequest(method=req.method, path=path, body=req.get_body() or b"", headers=req.headers,
                      query=req.params, route=req.route_params, scheme=req.url.split("://", 1)[0].lower())


async def answer(request: ApiRequest, handler: Handler) -> ApiResponse:
    """Runs one handler, mapping every failure to problem details. With telemetry configured, an incoming
    `traceparent` is continued: the spans the handler starts (a run's) are its children."""
    from shared.telemetry import continued_trace, telemetry_configured

    if telemetry_configured() and request.header("traceparent"):
        with continued_trace(trace_headers(request)):
            return await answer_untraced(request, handler)
    return await answer_untraced(request, handler)


def trace_headers(request: ApiRequest) -> dict[str, str]:
    return {name: value for name in ("traceparent", "tracestate") if (value := request.header(name))}


async def answer_untraced(request: ApiRequest, handler: Handler) -> ApiResponse:
    try:
        return await handler(await services(), request)
    except ProblemDetails as raised:
        return raised.response(request.path)
    except Exception as exc:  # never a traceback to the caller
        mapped = problem_for(exc)
        if mapped is None:
            log.exception("unhandled error in %s %s", request.method, request.path)
            mapped = ProblemDetails(500, "Internal error", "the request failed; it has been logged")
        elif mapped.status == 503:
            log.error("%s %s: %s", request.method, request.path, mapped.detail)
        return mapped.response(request.path)


async def respond(req: func.HttpRequest, handler: Handler) -> func.HttpResponse:
    """A streamed answer (server-sent events) is sent whole once it ends: the Functions host delivers an
    HttpResponse at once (incremental delivery there needs the HTTP streams extension); `tenantflow serve`
    streams it as it comes (shared.functions.local_server)."""
    response = await answer(to_api(req), handler)
    body = response.body
    if response.stream is not None:
        body += b"".join([chunk async for chunk in response.stream])
    return func.HttpResponse(body=body, status_code=response.status, headers=response.headers)


@bp.route(route="flows/{flow}/runs", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def start_run(req: func.HttpRequest) -> func.HttpResponse:
    return await respond(req, handlers.start_run)


@bp.route(route="runs/{run_id}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def get_run(req: func.HttpRequest) -> func.HttpResponse:
    return await respond(req, handlers.get_run)


@bp.route(route="hooks/{tenant}/{flow}", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def webhook(req: func.HttpRequest) -> func.HttpResponse:
    return await respond(req, handlers.webhook)


@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def health(req: func.HttpRequest) -> func.HttpResponse:
    return await respond(req, handlers.health)


@bp.route(route="usage", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def usage(req: func.HttpRequest) -> func.HttpResponse:
    return await respond(req, handlers.usage_report)


@bp.route(route=ADMIN + "/usage", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def admin_usage(req: func.HttpRequest) -> func.HttpResponse:
    return await respond(req, handlers.admin_usage)


@bp.route(route="dashboard", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def dashboard(req: func.HttpRequest) -> func.HttpResponse:
    return await respond(req, dashboard_handlers.dashboard)
