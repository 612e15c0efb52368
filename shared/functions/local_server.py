"""`tenantflow serve`: the app's very own HTTP functions behind a local ASGI server, for curl and the dashboard.

Every HTTP-triggered function registered in function_app.py is mounted at `/api/<route>`; a request becomes a
real `azure.functions.HttpRequest` and the registered function itself answers it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def registered_functions() -> tuple[Any, ...]:
    """The app's functions, indexed once (the SDK refuses to index the same app twice). function_app.py sits at
    the repository root, outside the package, so it is loaded from there when it is not importable."""
    import importlib
    import importlib.util
    import sys

    try:
        module = importlib.import_module("function_app")
    except ModuleNotFoundError:
        from shared.settings import REPO_ROOT

        spec = importlib.util.spec_from_file_location("function_app", REPO_ROOT / "function_app.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["function_app"] = module
        spec.loader.exec_module(module)
    return tuple(module.app.get_functions())


def http_functions() -> list[tuple[str, list[str], Any]]:
    """(route, methods, user function) of every HTTP trigger in function_app."""
    found = []
    for function in registered_functions():
        trigger = function.get_trigger()
        if trigger is None or trigger.get_binding_name() != "httpTrigger":
            continue
        methods = [str(getattr(m, "value", m)) for m in (trigger.methods or ["GET"])]
        found.append((trigger.route, methods, function.get_user_function()))
    return found


def create_asgi_app() -> Any:
    import azure.functions as func
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    def endpoint(route: str, user_function: Any) -> Any:
        api_answer = getattr(user_function, "api_answer", None)

        async def handle(request: Request) -> Response:
            # starlette's own mappings go in as they are: HttpRequest keeps its one lower-cased copy of the headers
            http_request = func.HttpRequest(
                method=request.method, url=str(request.url), headers=request.headers, params=request.query_params,
                route_params=request.path_params, body=await request.body())
            if route == STREAMED_ROUTE and "text/event-stream" in request.headers.get("accept", ""):
                return await streamed(http_request)
            if api_answer is not None:  # a function that can hand over its answer unsent (the gateway's)
                return starlette_response(await api_answer(http_request))
            answer = await user_function(http_request)
            return Response(answer.get_body(), status_code=answer.status_code, headers=answer.headers)

        return handle

    routes = [Route(f"/api/{route}", endpoint(route, fn), methods=methods) for route, methods, fn in http_functions()]
    return Starlette(routes=routes)


STREAMED_ROUTE = "flows/{flow}/runs"


async def streamed(http_request: Any) -> Any:
    """A run asked for as server-sent events: the same handler as the Functions host's, but its events are sent
    as they happen (the host sends them whole at the end, see shared.functions.http.respond)."""
    from shared.functions import http_handlers
    from shared.functions.http import answer, to_api

    return starlette_response(await answer(to_api(http_request), http_handlers.start_run))


def starlette_response(response: Any) -> Any:
    """An ApiResponse as starlette sends it: streamed when it has a stream (after its `body`)."""
    from starlette.responses import Response, StreamingResponse

    if response.stream is None:
        return Response(response.body, status_code=response.status, headers=response.headers)
    stream = response.stream
    if response.body:
        async def with_head() -> AsyncIterator[bytes]:
            yield response.body
            async for chunk in stream:
                yield chunk

        stream = with_head()
    return StreamingResponse(stream, status_code=response.status, headers=response.headers)


@asynccontextmanager
async def serving_in_this_loop() -> AsyncIterator[str]:
    """Serves the HTTP functions on a free 127.0.0.1 port inside the running event loop (so they share its
    connection pools); yields the base URL."""
    import asyncio
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP: asyncio sets NODELAY
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_asgi_app(), log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task


def serve(host: str = "127.0.0.1", port: int = 7071) -> None:
    import uvicorn

    print(f"Tenantflow HTTP functions on http://{host}:{port}/api/ (Ctrl+C to stop)")
    uvicorn.run(create_asgi_app(), host=host, port=port, log_level="warning")
