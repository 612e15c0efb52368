"""`tenantflow serve`: the app's very own HTTP functions behind a local ASGI server, for curl and the dashboard.

Every HTTP-triggered function registered in function_app.py is mounted at `/api/<route>` (FunctionsApp, a bare
ASGI app served by uvicorn with httptools on the standard asyncio loop); a request becomes a real
`azure.functions.HttpRequest` and the registered function itself answers it.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl

from shared.functions.routes import plain_path


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


ROUTE_PARAMETER = re.compile(r"\{(\*?)([A-Za-z_][A-Za-z0-9_]*)(?::[^}?]*)?(\??)\}")


def route_pattern(route: str) -> re.Pattern[str]:
    """A Functions route template (`flows/{flow}/runs`, `{id:int}`, `{name?}`, `{*rest}`) as a regex over the path
    after `/api/`; a parameter matches one segment, or (`*`) the rest of the path; one constrained to a single word
    (`{area:regex(^admin$)}`, shared.functions.routes) matches that word only."""
    route = plain_path(route)
    pattern, position = "", 0
    for found in ROUTE_PARAMETER.finditer(route):
        pattern += re.escape(route[position:found.start()])
        catch_all, name, optional = found.groups()
        pattern += f"(?P<{name}>{'.+' if catch_all else '[^/]+'}){'?' if optional else ''}"
        position = found.end()
    return re.compile("/api/" + pattern + re.escape(route[position:]) + "$")


class FunctionsApp:
    """A bare ASGI app over the registered HTTP functions: each request becomes a real `azure.functions.HttpRequest`
    and the registered function itself answers it. No framework in between: routing is a list of compiled route
    templates, and a JSON answer goes out as one start and one body message."""

    def __init__(self, functions: list[tuple[str, list[str], Any]]) -> None:
        self.routes = [(route_pattern(route), {m.upper() for m in methods}, route, function)
                       for route, methods, function in functions]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        allowed: set[str] = set()
        for pattern, methods, route, function in self.routes:
            found = pattern.match(path)
            if found is None:
                continue
            if method not in methods:
                allowed |= methods
                continue
            request = await http_request(scope, receive, found.groupdict())
            if route == STREAMED_ROUTE and "text/event-stream" in request.headers.get("accept", ""):
                await send_streamed(await streamed(request), send, receive)
                return
            api_answer = getattr(function, "api_answer", None)
            if api_answer is not None:  # a function that hands over its answer unsent (the gateway's): streamed
                await send_streamed(await api_answer(request), send, receive)
                return
            answer = await function(request)
            await send_answer(send, answer.status_code, answer.headers.items(), answer.get_body())
            return
        if allowed:
            await send_answer(send, 405, [("allow", ", ".join(sorted(allowed)))], b"")
        else:
            await send_answer(send, 404, [("content-type", "application/problem+json")], json.dumps({
                "type": "about:blank", "title": "Not found", "status": 404,
                "detail": f"no function answers {path}", "instance": path}).encode())


async def http_request(scope: dict[str, Any], receive: Any, route_params: dict[str, str]) -> Any:
    import azure.functions as func

    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    query = scope["query_string"].decode("latin-1")
    host = headers.get("host") or "{}:{}".format(*scope.get("server") or ("127.0.0.1", 80))
    path = scope.get("raw_path", scope["path"].encode()).decode("latin-1")
    url = f"{scope['scheme']}://{host}{path}{'?' + query if query else ''}"
    params = dict(parse_qsl(query, keep_blank_values=True))
    return func.HttpRequest(method=scope["method"], url=url, headers=headers, params=params,
                            route_params=route_params, body=b"".join(chunks))


async def send_answer(send: Any, status: int, headers: Any, body: bytes) -> None:
    raw = [(name.lower().encode("latin-1"), str(value).encode("latin-1")) for name, value in headers
           if name.lower() != "content-length"]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def send_streamed(response: Any, send: Any, receive: Any) -> None:
    """Sends an answer whose body is produced as it goes (server-sent events). When the client goes away the
    stream is closed (what it was producing for carries on: see shared.functions.http_handlers.sse_events)."""
    if response.stream is None:  # refused before anything started: problem details
        await send_answer(send, response.status, response.headers.items(), response.body)
        return
    headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in response.headers.items()]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    gone = asyncio.Event()

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()

    watcher = asyncio.create_task(watch())
    try:
        if response.body:
            await send({"type": "http.response.body", "body": response.body, "more_body": True})
        async for chunk in response.stream:
            if gone.is_set():
                break
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if not gone.is_set():
            await send({"type": "http.response.body", "body": b""})
    finally:
        watcher.cancel()
        close = getattr(response.stream, "aclose", None)
        if close is not None:
            await close()


def create_asgi_app() -> Any:
    return FunctionsApp(http_functions())


STREAMED_ROUTE = "flows/{flow}/runs"


async def streamed(http_request: Any) -> Any:
    """A run asked for as server-sent events: the same handler as the Functions host's, whose events are sent as
    they happen here (the host sends them whole at the end, see shared.functions.http.respond)."""
    from shared.functions import http_handlers
    from shared.functions.http import answer, to_api

    return await answer(to_api(http_request), http_handlers.start_run)


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
    # The standard loop, not uvloop: with psycopg's waits, uvloop added 1–1.5 ms to a PostgreSQL run's p50 at c=1
    # (interleaved `make bench` runs; same CPU per run, and no difference on SQLite or the gateway).
    uvicorn.run(create_asgi_app(), host=host, port=port, log_level="warning", loop="asyncio", http="httptools")
