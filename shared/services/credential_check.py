"""`tenantflow credentials test T NAME`: one 1-token chat completion through the real model port, with the tenant's
stored credential, reported as reachability, authentication and latency — or the exact reason it failed."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from shared.engine.ports import ChatRequest, Connection, CredentialSource, ModelPort, StepFailure

# failure code → (reachable, authenticated): what a failure with this code proves about the endpoint
WHAT_FAILURE_PROVES: dict[str, tuple[bool | None, bool | None]] = {
    "tenant_not_found": (None, None),
    "tenant_suspended": (None, None),
    "credential_not_found": (None, None),
    "endpoint_refused": (None, None),
    "credential_unreadable": (None, None),
    "invalid_connection": (None, None),
    "model_unavailable": (False, None),
    "authentication_failed": (True, False),
    "permission_denied": (True, False),
    "deployment_not_found": (True, True),
    "bad_request": (True, True),
    "content_filter": (True, True),
    "insufficient_quota": (True, True),
    "rate_limited": (True, True),
    "model_error": (True, None),
}


@dataclass(frozen=True)
class CredentialCheck:
    tenant: str
    credential: str
    endpoint_host: str | None
    model: str
    ok: bool
    reachable: bool | None  # None: not tried (the credential could not be used)
    authenticated: bool | None
    latency_ms: float | None
    code: str | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def connection_from(name: str, fields: dict[str, Any]) -> Connection:
    """The run-time connection for a stored credential's fields (as `load_credential` exposes them)."""
    endpoint = fields.get("endpoint") or fields.get("base_url") or ""
    kind = "openai" if fields.get("kind") == "openai" else "azure_openai"
    return Connection(name, kind, endpoint, fields.get("api_key"), fields.get("auth") or "key",
                      str(fields.get("api_version") or "2024-10-21"))


async def check_credential(credentials: CredentialSource, model_port: ModelPort, tenant_id: str, name: str,
                           model: str, clock: Any = time.perf_counter) -> CredentialCheck:
    """Never raises for a failure of the credential or its endpoint: the answer says what went wrong. The caller
    passes a model port with a single attempt (a check should not sit through retries)."""
    host: str | None = None
    started = clock()
    try:
        fields = await credentials.load(tenant_id, name)
        connection = connection_from(name, fields)
        host = urlsplit(connection.endpoint).hostname
        if not connection.endpoint:
            raise StepFailure(f"tenant {tenant_id}: credential {name} has no endpoint", "invalid_connection")
        started = clock()
        result = await model_port.chat(ChatRequest(connection, model, [{"role": "user", "content": "ping"}],
                                                   temperature=0.0, max_completion_tokens=1,
                                                   step_id="credentials-test"))
    except StepFailure as exc:
        reachable, authenticated = WHAT_FAILURE_PROVES.get(exc.code, (None, None))
        latency = round((clock() - started) * 1000, 1) if reachable else None
        return CredentialCheck(tenant_id, name, host, model, False, reachable, authenticated, latency,
                               exc.code, str(exc))
    except Exception as exc:  # a check reports every failure: by type only, as its text may hold a URL
        return CredentialCheck(tenant_id, name, host, model, False, None, None, None, "unexpected_error",
                               f"unexpected {type(exc).__name__}")
    latency = round((clock() - started) * 1000, 1)
    return CredentialCheck(tenant_id, name, result.endpoint_host or host, model, True, True, True, latency,
                           None, f"answered {result.usage.total_tokens} tokens as model {result.model or model!r}")
