"""The gateway's way to a tenant's model endpoint: the raw JSON body, sent through the same checked HTTP transport
as every model call (shared/connections/outbound.py: the SDK's aiohttp client, addresses checked against the
allowlist at connect time, no redirects, no proxies), without building openai request/response objects.

One attempt only: a gateway never retries (its caller's SDK does)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from shared.connections.allowlist import EndpointAllowlist
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
    body: bytes  # empty for a stream until read
    chunks: AsyncIterator[bytes] | None  # a streamed 200: the raw bytes as they arrive
    close: Callable[[], Awaitable[None]]


def chat_url(connection: Connection, deployment: str) -> str:
    if connection.kind == "openai":
        return (connection.endpoint or OPENAI_BASE_URL).rstrip("/") + "/chat/completions"
    return (f"{connection.endpoint.rstrip('/')}/openai/deployments/{quote(deployment, safe='')}/chat/completions"
            f"?api-version={quote(connection.api_version, safe='')}")


class Upstream:
    """One checked HTTP client (and its pool) for every gateway call, built on first use inside the event loop."""

    def __init__(self, endpoints: EndpointAllowlist, timeout: float, token_credential: Any = None,
                 resolver: Any = None) -> None:
        """`token_credential` (the app's Azure credential) signs `auth: entra` calls; `resolver` (an aiohttp
        AbstractResolver) replaces DNS, the seam tests use."""
        self.endpoints = endpoints
        self.timeout = timeout
        self.token_credential = token_credential
        self.token_provider: Any = None
        self.resolver = resolver
        self.client: Any = None

    def http_client(self) -> Any:
        if self.client is None:
            from shared.connections.outbound import checked_http_client

            self.client = checked_http_client(self.endpoints, self.resolver)
        return self.client

    async def headers_for(self, connection: Connection) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept-encoding": "identity"}
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
        import httpx2

        from shared.connections.outbound import outbound_refusal

        self.endpoints.check(connection.endpoint or OPENAI_BASE_URL)
        client = self.http_client()
        request = client.build_request("POST", chat_url(connection, deployment), content=body,
                                       headers=await self.headers_for(connection), timeout=self.timeout)
        try:
            response = await client.send(request, stream=True)
        except httpx2.HTTPError as exc:
            refusal = outbound_refusal(exc)
            host = request.url.host
            if refusal is not None:
                raise UpstreamUnreachable(str(refusal)) from None
            what = "timed out" if isinstance(exc, httpx2.TimeoutException) else "is unreachable"
            raise UpstreamUnreachable(f"the model endpoint {host} {what} ({type(exc).__name__})") from None
        headers = {name: response.headers[name] for name in PASSED_RESPONSE_HEADERS if name in response.headers}
        content_type = response.headers.get("content-type", "application/json")
        if stream and response.status_code == 200:
            return UpstreamAnswer(200, headers, content_type, b"", response.aiter_raw(), response.aclose)
        try:
            body_read = await response.aread()
        except httpx2.HTTPError as exc:
            raise UpstreamUnreachable(f"the answer of {request.url.host} broke off ({type(exc).__name__})") from None
        finally:
            await response.aclose()
        return UpstreamAnswer(response.status_code, headers, content_type, body_read, None, response.aclose)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None
