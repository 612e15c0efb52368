"""The HTTP transport of every model call: one aiohttp session (`OutboundSession`) with two guards. Chat calls
post their JSON through it directly; streamed calls go through the openai SDK, whose aiohttp transport uses the
same session (shared.connections.sdk_transport).

- Addresses: a resolver wrapped around aiohttp's checks every address a host name resolves to (and the transport
  checks IP literals, which aiohttp never resolves) with `EndpointAllowlist.address_refusal` — no loopback, private,
  link-local, CGNAT, metadata, unspecified or multicast address, nor one hidden in an IPv6 form, unless the host is
  listed in TENANTFLOW_ALLOWED_HOSTS. aiohttp connects to exactly the addresses its resolver returned, so the
  checked address is the one used: a rebinding DNS answer between the check and the connect cannot happen.
- Redirects: none is followed. A 3xx answer is closed unread and raised as `RedirectRefused`.

Through the SDK both errors reach the model port wrapped (`APIConnectionError`); `outbound_refusal` digs them out
so the run error says what happened instead of "unreachable".
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiohttp import ClientSession, ClientTimeout, TCPConnector
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from shared.connections.allowlist import EndpointAllowlist


class AddressRefused(OSError):
    """A host resolved to (or is) an address a model call may not reach. The message names host and address."""

    def __init__(self, host: str, address: str, reason: str) -> None:
        super().__init__(f"{host} resolves to {address}, {reason}; model calls may only reach public addresses "
                         "(list the host in TENANTFLOW_ALLOWED_HOSTS to allow it)")
        self.host = host


class RedirectRefused(OSError):
    """The endpoint answered with a redirect. The message names the host and status, never the target."""

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


@dataclass(frozen=True)
class RawAnswer:
    status: int
    headers: Any  # case-insensitive mapping
    body: bytes


class OutboundSession:
    """One aiohttp session for every model call of the process: connections kept alive per host, every address
    checked by `CheckedResolver`, IP literals checked here, no redirect followed, no proxy from the environment.
    `resolver` is the seam tests use to make a name resolve to 127.0.0.1."""

    def __init__(self, policy: EndpointAllowlist, resolver: AbstractResolver | None = None) -> None:
        self.policy = policy
        self.resolver = resolver
        self.session: ClientSession | None = None

    def client_session(self) -> ClientSession:
        """The session, made at the first call (inside the event loop)."""
        if self.session is None or self.session.closed:
            connector = TCPConnector(resolver=CheckedResolver(self.policy, self.resolver), limit=100,
                                     keepalive_timeout=30)
            self.session = ClientSession(connector=connector, trust_env=False)
        return self.session

    def check_literal(self, url: str) -> str:
        """The URL's host; an IP literal (which no resolver sees) is checked here."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        try:
            ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return host  # a name: the resolver checks what it resolves to
        reason = self.policy.address_refusal(host, parts.port or default_port(parts.scheme), host)
        if reason is not None:
            raise AddressRefused(host, host, reason)
        return host

    async def post(self, url: str, headers: dict[str, str], body: bytes, timeout: float) -> RawAnswer:
        """One POST, its answer read whole. Raises AddressRefused, RedirectRefused, or aiohttp's errors."""
        host = self.check_literal(url)
        async with self.client_session().post(url, data=body, headers=headers, allow_redirects=False,
                                              timeout=ClientTimeout(total=timeout)) as response:
            if 300 <= response.status < 400:
                raise RedirectRefused(host, response.status)
            return RawAnswer(response.status, response.headers, await response.read())

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None


def default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def outbound_refusal(exc: BaseException) -> AddressRefused | RedirectRefused | None:
    """The AddressRefused / RedirectRefused an error was caused by, if any (follows __cause__/__context__, and
    aiohttp's `os_error`)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, (AddressRefused, RedirectRefused)):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__ or getattr(current, "os_error", None)
    return None
