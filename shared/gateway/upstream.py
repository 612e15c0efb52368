"""The gateway's way to a tenant's model endpoint: the raw JSON body over the process's `OutboundSession`
(shared/connections/outbound.py) — the same pool and guards as every model call: the endpoint allowlist, every
address a name resolves to checked at connect time, IP literals checked, no redirect followed, no proxy — without
the SDK's request/response objects.

One attempt only: a gateway never retries (its caller's SDK does)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from shared.connections.allowlist import EndpointAllowlist
from shared.connections.outbound import OutboundSession
from shared.engine.ports import Connection

OPENAI_BASE_URL = "https://api.openai.com/v1"
PASSED_RESPONSE_HEADERS = ("retry-after", "retry-after-ms", "x-ratelimit-remaining-requests",
                           "x-ratelimit-remaining-tokens", "x-ratelimit-limit-requests", "x-ratelimit-limit-tokens")


class UpstreamUnreachable(Exception):
    """No answer from the endpoint (connection refused or dropped, timeout, address or redirect refused). The
    message names the host, never the key."""


@dataclass
class UpstreamAnswer:
    status: int
    headers: dict[str, str]  # the few worth passing on (rate limits), lower-case
    content_type: str
    body: bytes  # empty for a stream
    chunks: AsyncIterator[bytes] | None  # a streamed 200: the raw bytes as they arrive
    close: Callable[[], Awaitable[None]]


def chat_url(connection: Connection, deployment: str) -> str:
    if connection.kind == "openai":
        return (connection.endpoint or OPENAI_BASE_URL).rstrip("/") + "/chat/completions"
    return (f"{connection.endpoint.rstrip('/')}/openai/deployments/{quote(deployment, safe='')}/chat/completions"
            f"?api-version={quote(connection.api_version, safe='')}")


async def nothing_to_close() -> None:
    return None


class Upstream:
    def __init__(self, outbound: OutboundSession, endpoints: EndpointAllowlist, timeout: float,
                 token_credential: Any = None) -> None:
        """`timeout`: seconds for a whole answer, or to connect and between two reads of a stream.
        `token_credential` (the app's Azure credential) signs `auth: entra` calls."""
        self.outbound = outbound
        self.endpoints = endpoints
        self.timeout = timeout
        self.token_credential = token_credential
        self.token_provider: Any = None

    async def headers_for(self, connection: Connection) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if connection.api_key is not None:
            if connection.kind == "openai":
                headers["authorization"] = "Bearer " + connection.api_key.reveal()
            else:
                headers["api-key"] = connection.api_key.reveal()
        elif connection.auth == "entra" and self.token_credential is not None:
            if self.token_provider is None:
                from azure.identity.aio import get_bearer_token_provider

                from shared.connections.openai_model import COGNITIVE_SCOPE

                self.token_provider = get_bearer_token_provider(self.token_credential, COGNITIVE_SCOPE)
            headers["authorization"] = f"Bearer {await self.token_provider()}"
        return headers

    async def post(self, connection: Connection, deployment: str, body: bytes, stream: bool) -> UpstreamAnswer:
        """Sends `body` to the deployment's chat completions; raises UpstreamUnreachable when nothing answered."""
        import aiohttp

        from shared.connections.outbound import RedirectRefused, outbound_refusal

        self.endpoints.check(connection.endpoint or OPENAI_BASE_URL)
        url = chat_url(connection, deployment)
        host = urlsplit(url).hostname or ""
        headers = await self.headers_for(connection)
        try:
            if not stream:
                raw = await self.outbound.post(url, headers, body, self.timeout)
                return UpstreamAnswer(raw.status, passed_headers(raw.headers),
                                      raw.headers.get("content-type", "application/json"), raw.body, None,
                                      nothing_to_close)
            self.outbound.check_literal(url)
            response = await self.outbound.client_session().post(
                url, data=body, headers=headers, allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeout, sock_read=self.timeout))
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            refusal = outbound_refusal(exc)
            if refusal is not None:
                raise UpstreamUnreachable(str(refusal)) from None
            what = "timed out" if isinstance(exc, TimeoutError) else "is unreachable"
            raise UpstreamUnreachable(f"the model endpoint {host} {what} ({type(exc).__name__})") from None
        if 300 <= response.status < 400:
            response.close()
            raise UpstreamUnreachable(str(RedirectRefused(host, response.status)))
        content_type = response.headers.get("content-type", "application/json")

        async def close() -> None:
            response.release()

        if response.status == 200:
            return UpstreamAnswer(200, passed_headers(response.headers), content_type, b"",
                                  response.content.iter_any(), close)
        try:
            read = await response.read()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise UpstreamUnreachable(f"the answer of {host} broke off ({type(exc).__name__})") from None
        finally:
            response.release()
        return UpstreamAnswer(response.status, passed_headers(response.headers), content_type, read, None,
                              nothing_to_close)


def passed_headers(headers: Any) -> dict[str, str]:
    return {name: headers[name] for name in PASSED_RESPONSE_HEADERS if name in headers}
