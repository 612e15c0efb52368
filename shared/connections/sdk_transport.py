"""The openai SDK's HTTP client for streamed model calls: its aiohttp transport over the process's
`OutboundSession` (checked addresses, no redirects), imported only when a streamed call needs the SDK."""

from __future__ import annotations

from typing import Any

import httpx2
import openai
from openai._vendor.httpx_aiohttp import AiohttpTransport

from shared.connections.outbound import OutboundSession, RedirectRefused


class CheckedTransport(httpx2.AsyncBaseTransport):
    """Wraps the SDK's aiohttp transport: checks IP-literal hosts, refuses redirects. Both refusals are raised
    as a connection error caused by the refusal (see outbound_refusal)."""

    def __init__(self, outbound: OutboundSession, inner: httpx2.AsyncBaseTransport) -> None:
        self.outbound = outbound
        self.inner = inner

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        try:
            host = self.outbound.check_literal(str(request.url))
        except OSError as address_refused:
            raise httpx2.ConnectError(str(address_refused)) from address_refused
        response = await self.inner.handle_async_request(request)
        if 300 <= response.status_code < 400:
            await response.aclose()
            redirect_refused = RedirectRefused(host, response.status_code)
            raise httpx2.ConnectError(str(redirect_refused)) from redirect_refused
        return response

    async def aclose(self) -> None:
        """The session belongs to the OutboundSession, which closes it."""


def checked_http_client(outbound: OutboundSession) -> Any:
    """The `http_client` for openai clients: the SDK's aiohttp client over the outbound session, no redirects,
    no proxies from the environment."""
    transport = CheckedTransport(outbound, AiohttpTransport(client=outbound.client_session))
    return openai.DefaultAioHttpClient(transport=transport, follow_redirects=False, trust_env=False)
