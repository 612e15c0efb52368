"""In-memory fakes of the engine ports, for fast unit tests of pure logic. They expose what they saw."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult

from shared.engine.ports import ChatRequest, ChatResult, CredentialSource, EndpointPolicy, ModelPort, StepFailure
from shared.engine.usage import TokenUsage
from shared.secret import Secret


class FakeModel(ModelPort):
    """Replies `reply(request)`; fails with `failures[prompt]` when the last user message matches."""

    def __init__(self, failures: dict[str, StepFailure] | None = None) -> None:
        self.requests: list[ChatRequest] = []
        self.failures = failures or {}

    async def chat(self, request: ChatRequest) -> ChatResult:
        self.requests.append(request)
        last = request.messages[-1]["content"]
        if last in self.failures:
            raise self.failures[last]
        content = json.dumps({"echo": len(last)}) if request.response_format == "json_object" else f"re: {last}"
        prompt, completion = len(str(request.messages)) // 4, len(content) // 4
        usage = TokenUsage(prompt, completion, prompt + completion)
        return ChatResult(content, "assistant", request.model, "stop", usage, request.connection.endpoint)


class FakeCredentials(CredentialSource):
    def __init__(self, by_tenant: dict[str, dict[str, dict[str, Any]]]) -> None:
        self.by_tenant = by_tenant
        self.loads: list[tuple[str, str]] = []

    async def load(self, tenant_id: str, name: str) -> dict[str, Any]:
        self.loads.append((tenant_id, name))
        try:
            fields = dict(self.by_tenant[tenant_id][name])
        except KeyError:
            raise StepFailure(f"tenant {tenant_id} has no credential {name}", "credential_not_found") from None
        if isinstance(fields.get("api_key"), str):
            fields["api_key"] = Secret(fields["api_key"])
        return fields


class AllowAll(EndpointPolicy):
    def check(self, endpoint: str) -> str:
        if "blocked" in endpoint:
            raise StepFailure(f"endpoint {endpoint} is not allowed", "endpoint_refused")
        return endpoint.rstrip("/")


class ManualClock:
    """A Clock (shared.clock) that tests set: it tells the real time until `set`, then the time it was given,
    moved only by `advance`."""

    def __init__(self, moment: datetime | None = None) -> None:
        self.moment = moment

    def now(self) -> datetime:
        return self.moment if self.moment is not None else datetime.now(UTC)

    def set(self, moment: datetime) -> None:
        self.moment = moment

    def advance(self, **delta: float) -> None:
        self.moment = self.now() + timedelta(**delta)


class StaticResolver(AbstractResolver):
    """DNS for tests: each name in `addresses` resolves to its address (e.g. a public-looking name → 127.0.0.1)."""

    def __init__(self, addresses: dict[str, str]) -> None:
        self.addresses = addresses
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        self.asked.append(host)
        if host not in self.addresses:
            raise OSError(f"{host}: no such name in the test resolver")
        address = self.addresses[host]
        kind = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [{"hostname": host, "host": address, "port": port, "family": kind, "proto": 0, "flags": 0}]

    async def close(self) -> None:
        return None
