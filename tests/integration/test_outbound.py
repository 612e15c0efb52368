"""Outbound model requests through the real openai SDK and its aiohttp transport: redirects are never followed,
resolved addresses are checked (a name resolving to 127.0.0.1 through the resolver seam), the emulator still works
when its host is listed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from shared.connections.allowlist import EndpointAllowlist
from shared.connections.openai_model import OpenAIModelPort
from shared.connections.outbound import OutboundSession
from shared.engine.ports import ChatRequest, Connection, StepFailure
from shared.secret import Secret
from tests.fakes import StaticResolver


class LocalServer:
    """An aiohttp server on 127.0.0.1 that records every request; `redirect_to` makes it answer 307."""

    def __init__(self, redirect_to: str | None = None, echo_key: bool = False) -> None:
        self.redirect_to = redirect_to
        self.echo_key = echo_key
        self.seen: list[str] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(f"{request.method} {request.path_qs} {await request.text()}")
        if self.redirect_to is not None:
            raise web.HTTPTemporaryRedirect(self.redirect_to + request.path_qs)
        if self.echo_key:  # a hostile endpoint that echoes what it was sent into its error text
            key = request.headers.get("api-key", "")
            return web.json_response({"error": {"code": "bad", "message": (
                f"bad key {key}; prefix {key[:10]}; Authorization: Bearer {key}; also sk-live-{key[::-1]} and "
                "token Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA== for deployment gpt-4o-mini-2024-07-18")}}, status=400)
        return web.json_response({"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "secret-ish data"}}]})

    async def start(self) -> LocalServer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


@pytest.fixture
async def servers() -> AsyncIterator[tuple[LocalServer, LocalServer]]:
    target = await LocalServer().start()
    redirecting = await LocalServer(redirect_to=f"http://127.0.0.1:{target.port}").start()
    yield redirecting, target
    await redirecting.stop()
    await target.stop()


def ask(endpoint: str, text: str = "the prompt", model: str = "gpt-4o-mini") -> ChatRequest:
    return ChatRequest(Connection("c", "azure_openai", endpoint, Secret("tenant-key-123")), model,
                       [{"role": "user", "content": text}], step_id="s")


async def test_a_redirect_is_refused_and_nothing_reaches_its_target(servers):
    redirecting, target = servers
    port = OpenAIModelPort(EndpointAllowlist(("127.0.0.1",)))
    try:
        with pytest.raises(StepFailure) as caught:
            await port.chat(ask(f"http://127.0.0.1:{redirecting.port}", "PROMPT-MUST-NOT-LEAVE"))
    finally:
        await port.close()
    assert caught.value.code == "redirect_refused"
    assert str(caught.value) == ("the model endpoint 127.0.0.1 answered with a redirect (HTTP 307); redirects are "
                                 "never followed")
    assert len(redirecting.seen) == 1 and "PROMPT-MUST-NOT-LEAVE" in redirecting.seen[0]  # asked once, not retried
    assert target.seen == []


async def test_a_name_resolving_to_loopback_is_refused_before_connecting(servers):
    _, target = servers
    resolver = StaticResolver({"rebind.openai.azure.com": "127.0.0.1"})
    port = OpenAIModelPort(EndpointAllowlist(), resolver=resolver)
    try:
        with pytest.raises(StepFailure) as caught:
            # https on an allowed suffix passes the endpoint check; the resolved address does not
            await port.chat(ask("https://rebind.openai.azure.com"))
    finally:
        await port.close()
    assert caught.value.code == "address_refused"
    assert "rebind.openai.azure.com resolves to 127.0.0.1, a loopback address" in str(caught.value)
    assert resolver.asked == ["rebind.openai.azure.com"] and target.seen == []


@pytest.mark.parametrize("address, reason", [
    ("10.1.2.3", "a private address"),
    ("100.64.0.9", "a shared (CGNAT) address"),
    ("169.254.169.254", "a cloud metadata or link-local address"),
    ("::ffff:127.0.0.1", "a loopback address"),
    ("64:ff9b::a9fe:a9fe", "a cloud metadata or link-local address"),
    ("0.0.0.0", "an unspecified address"),
    ("224.0.0.1", "a multicast address"),
])
async def test_every_non_public_address_is_refused(address, reason):
    resolver = StaticResolver({"contoso.openai.azure.com": address})
    port = OpenAIModelPort(EndpointAllowlist(), resolver=resolver, max_attempts=1)
    try:
        with pytest.raises(StepFailure) as caught:
            await port.chat(ask("https://contoso.openai.azure.com"))
    finally:
        await port.close()
    assert caught.value.code == "address_refused" and reason in str(caught.value)


async def test_a_listed_name_may_resolve_to_loopback(emulator):
    resolver = StaticResolver({"emulator.test": "127.0.0.1"})
    port = OpenAIModelPort(EndpointAllowlist(("emulator.test",)), resolver=resolver)
    try:
        result = await port.chat(ask(f"http://emulator.test:{emulator.port}", "hello"))
    finally:
        await port.close()
    assert result.endpoint_host == "emulator.test" and result.usage.total_tokens > 0


async def test_the_emulator_works_through_the_checked_transport_when_listed(emulator):
    port = OpenAIModelPort(EndpointAllowlist(("127.0.0.1",)))
    try:
        result = await port.chat(ask(emulator.base_url, "hello"))
        assert (result.attempt, result.finish_reason) == (1, "stop")
    finally:
        await port.close()
    unlisted = OpenAIModelPort(EndpointAllowlist())
    with pytest.raises(StepFailure) as caught:
        await unlisted.chat(ask(emulator.base_url, "hello"))
    assert caught.value.code == "endpoint_refused"


async def test_upstream_error_text_is_stored_without_the_key_or_key_like_tokens():
    server = await LocalServer(echo_key=True).start()
    port = OpenAIModelPort(EndpointAllowlist(("127.0.0.1",)))
    try:
        with pytest.raises(StepFailure) as caught:
            await port.chat(ask(f"http://127.0.0.1:{server.port}"))
    finally:
        await port.close()
        await server.stop()
    message = str(caught.value)
    assert caught.value.code == "bad_request" and "tenant-key-123"[:8] not in message
    assert "321-yek-tnanet" not in message and "Zm9vYmFy" not in message
    assert message == ("the model at 127.0.0.1 rejected the request: bad key ******; prefix ******; Authorization: "
                       "Bearer ******; also ****** and token ****** for deployment gpt-4o-mini-2024-07-18")


async def test_the_gateway_upstream_refuses_redirects_and_private_addresses_like_the_model_port(servers):
    from shared.gateway.upstream import Upstream, UpstreamUnreachable

    redirecting, target = servers
    policy = EndpointAllowlist(("127.0.0.1",))
    outbound = OutboundSession(policy)
    connection = Connection("c", "azure_openai", f"http://127.0.0.1:{redirecting.port}", Secret("tenant-key-123"))
    for stream in (False, True):
        with pytest.raises(UpstreamUnreachable, match="redirect"):
            await Upstream(outbound, policy, timeout=5).post(connection, "gpt-4o-mini", b'{"messages": []}', stream)
    assert target.seen == []
    await outbound.close()
    policy = EndpointAllowlist()
    outbound = OutboundSession(policy, StaticResolver({"rebind.openai.azure.com": "127.0.0.1"}))
    connection = Connection("c", "azure_openai", "https://rebind.openai.azure.com", Secret("tenant-key-123"))
    for stream in (False, True):
        with pytest.raises(UpstreamUnreachable, match="resolves to 127.0.0.1"):
            await Upstream(outbound, policy, timeout=5).post(connection, "gpt-4o-mini", b'{"messages": []}', stream)
    await outbound.close()
