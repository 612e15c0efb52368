"""The HTTP transport of every model call: the openai SDK's aiohttp client with two guards.

- Addresses: a resolver wrapped around aiohttp's checks every address a host name resolves to (and the transport
  checks IP literals, which aiohttp never resolves) with `EndpointAllowlist.address_refusal` — no loopback, private,
  link-local, CGNAT, metadata, unspecified or multicast address, nor one hidden in an IPv6 form, unless the host is
  listed in TENANTFLOW_ALLOWED_HOSTS. aiohttp connects to exactly the addresses its resolver returned, so the
  checked address is the one used: a rebinding DNS answer between the check and the connect cannot happen.
- Redirects: none is followed. A 3xx answer is closed unread and raised as `RedirectRefused`.

Both errors reach the model port wrapped by the SDK (`APIConnectionError`); `outbound_refusal` digs them out so
the run error says what happened instead of "unreachable".
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Any

import httpx2
from aiohttp import ClientSession, TCPConnector
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from shared.connections.allowlist import EndpointAllowlist


class AddressRefused(OSError):
    """A host resolved to (or is) an address a model call may not reach. The message names host and address."""

    def __init__(self, host: str, address: str, reason: str) -> None:
        super().__init__(f"{host} resolves to {address}, {reason}; model calls may only reach public addresses "
                         "(list the host in TENANTFLOW_ALLOWED_HOSTS to allow it)")
        self.host = host


class RedirectRefused(httpx2.TransportError):
    """The endpoint answered with a redirect. The message names the host and status, never the target. A transport
    error, so the SDK wraps it as a connection error instead of reading the response."""

    def __init__(self, host: str, status: int) -> None:
        super().__init__(f"the model endpoint {host} answered with a redirect (HTTP {status}); redirects are "
                         "never followed")
        self.host = host


class CheckedResolver(AbstractResolver):
    """Resolves with `inner` (aiohttp's default resolver unless a test gives another) and refuses the whole answer
    when any address in it is refused for that host."""

    def __init__(self, policy: EndpointAllowlist, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self.inner = inner

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        if self.inner is None:
            self.inner = DefaultResolver()
        answers = await self.inner.resolve(host, port, family)
        for answer in answers:
            reason = self.policy.address_refusal(host, port, answer["host"])
            if reason is not None:
                raise AddressRefused(host, answer["host"], reason)
        return answers

    async def close(self) -> None:
        if self.inner is not None:
            await self.inner.close()


class CheckedTransport(httpx2.AsyncBaseTransport):
    """Wraps the SDK's aiohttp transport: checks IP-literal hosts, refuses redirects."""

    def __init__(self, policy: EndpointAllowlist, inner: httpx2.AsyncBaseTransport) -> None:
        self.policy = policy
        self.inner = inner

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        host = request.url.host
        refused = literal_refusal(self.policy, host, request.url.port or default_port(request.url.scheme))
        if refused is not None:
            raise httpx2.ConnectError(str(refused)) from refused
        response = await self.inner.handle_async_request(request)
        if 300 <= response.status_code < 400:
            await response.aclose()
            raise RedirectRefused(host, response.status_code)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def literal_refusal(policy: EndpointAllowlist, host: str, port: int) -> AddressRefused | None:
    """The refusal of a host that is an IP literal (aiohttp never resolves those); None for a name (the resolver
    checks what it resolves to) or an allowed address."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    reason = policy.address_refusal(host, port, host)
    return AddressRefused(host, host, reason) if reason is not None else None


def checked_session(policy: EndpointAllowlist, resolver: AbstractResolver | None = None) -> ClientSession:
    """An aiohttp session whose every connection goes through `CheckedResolver`, with no proxies from the
    environment. Called inside the event loop. Callers check IP literals (`literal_refusal`) and refuse redirects."""
    connector = TCPConnector(resolver=CheckedResolver(policy, resolver), limit=100, keepalive_timeout=30)
    return ClientSession(connector=connector, trust_env=False)


def checked_http_client(policy: EndpointAllowlist, resolver: AbstractResolver | None = None) -> httpx2.AsyncClient:
    """The `http_client` for openai clients: the SDK's aiohttp client, no redirects, no proxies from the
    environment (a proxy would resolve names itself), every connection through `CheckedResolver`.
    `resolver` is the seam tests use to make a name resolve to 127.0.0.1."""
    import openai
    from openai._vendor.httpx_aiohttp import AiohttpTransport

    factory: Callable[..., Any] = openai.DefaultAioHttpClient
    # the session is built inside the event loop, at the first request
    transport = CheckedTransport(policy, AiohttpTransport(client=lambda: checked_session(policy, resolver)))
    client: httpx2.AsyncClient = factory(transport=transport, follow_redirects=False, trust_env=False)
    return client


def outbound_refusal(exc: BaseException) -> AddressRefused | RedirectRefused | None:
    """The AddressRefused / RedirectRefused an SDK error was caused by, if any (follows __cause__/__context__)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, (AddressRefused, RedirectRefused)):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
