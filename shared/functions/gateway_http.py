"""HTTP trigger functions of the OpenAI-compatible gateway (and the operator's routes for model aliases).

`OpenAI(base_url="https://<app>/api/v1")` and `AzureOpenAI(azure_endpoint="https://<app>/api")` work unchanged
against these routes with a tenant API key. Each function turns the HttpRequest into an ApiRequest and calls its
handler in shared.functions.gateway_handlers. A streamed answer is sent whole by the Functions host (see
shared.functions.http.respond); `tenantflow serve` relays it as it comes, through `api_answer`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import azure.functions as func

from shared.functions import admin_handlers
from shared.functions import gateway_handlers as handlers
from shared.functions.api_messages import ApiResponse
from shared.functions.http import respond, to_api
from shared.functions.routes import ADMIN

bp = func.Blueprint()


def streamable(handler: handlers.GatewayHandler) -> Callable[[Any], Awaitable[Any]]:
    """The trigger function of a gateway handler; its `api_answer` gives the ApiResponse itself (stream and all),
    for hosts that can stream (`tenantflow serve`)."""

    async def api_answer(req: func.HttpRequest) -> ApiResponse:
        return await handlers.gateway_answer(to_api(req), handler)

    async def function(req: func.HttpRequest) -> func.HttpResponse:
        response = await api_answer(req)
        body = response.body
        if response.stream is not None:
            body += b"".join([chunk async for chunk in response.stream])
        return func.HttpResponse(body=body, status_code=response.status, headers=response.headers)

    function.api_answer = api_answer  # type: ignore[attr-defined]
    function.__name__ = handler.__name__
    return function


chat_completions = bp.route(route="v1/chat/completions", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)(
    streamable(handlers.chat_completions))
azure_chat_completions = bp.route(route="openai/deployments/{alias}/chat/completions", methods=["POST"],
                                  auth_level=func.AuthLevel.ANONYMOUS)(streamable(handlers.azure_chat_completions))
list_models = bp.route(route="v1/models", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)(
    streamable(handlers.list_models))


@bp.route(route=ADMIN + "/tenants/{tenant}/models/{alias}", methods=["PUT", "GET", "DELETE"],
          auth_level=func.AuthLevel.ANONYMOUS)
async def admin_model_alias(req: func.HttpRequest) -> func.HttpResponse:
    if req.method == "PUT":
        return await respond(req, admin_handlers.put_model)
    if req.method == "DELETE":
        return await respond(req, admin_handlers.delete_model)
    return await respond(req, admin_handlers.get_model)


@bp.route(route=ADMIN + "/tenants/{tenant}/models", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def admin_model_aliases(req: func.HttpRequest) -> func.HttpResponse:
    return await respond(req, admin_handlers.list_models)

