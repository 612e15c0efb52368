"""HTTP trigger functions (route prefix `api`, see host.json). Each parses the request, calls the plain
handler in shared.services.http_api and turns its answer into an HttpResponse."""

from __future__ import annotations

import azure.functions as func

from shared.functions.runtime import services
from shared.services.api_messages import ApiRequest, ApiResponse

bp = func.Blueprint()


def to_api(req: func.HttpRequest) -> ApiRequest:
    path = "/" + req.url.split("://", 1)[-1].split("/", 1)[-1].split("?", 1)[0]
    return ApiRequest(method=req.method, path=path, body=req.get_body() or b"",
                      headers={k.lower(): v for k, v in req.headers.items()}, query=dict(req.params),
                      route=dict(req.route_params))


def to_http(response: ApiResponse) -> func.HttpResponse:
    return func.HttpResponse(body=response.body, status_code=response.status, headers=response.headers)


async def call(handler: str, req: func.HttpRequest) -> func.HttpResponse:
    svc = await services()
    return to_http(await svc.http.handle(handler, to_api(req)))


@bp.route(route="flows/{flow}/runs", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def start_run(req: func.HttpRequest) -> func.HttpResponse:
    return await call("start_run", req)


@bp.route(route="runs/{run_id}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def get_run(req: func.HttpRequest) -> func.HttpResponse:
    return await call("get_run", req)


@bp.route(route="hooks/{tenant}/{flow}", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def webhook(req: func.HttpRequest) -> func.HttpResponse:
    return await call("webhook", req)


@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def health(req: func.HttpRequest) -> func.HttpResponse:
    return await call("health", req)


@bp.route(route="usage", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def usage(req: func.HttpRequest) -> func.HttpResponse:
    return await call("usage_report", req)


@bp.route(route="admin/usage", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def admin_usage(req: func.HttpRequest) -> func.HttpResponse:
    return await call("admin_usage", req)


@bp.route(route="dashboard", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def dashboard(req: func.HttpRequest) -> func.HttpResponse:
    return await call("dashboard", req)
