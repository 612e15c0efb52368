"""`RemoteOperator`: the Operator interface (shared.services.operator) over a deployed app's operator HTTP API, for
`tenantflow --url URL --operator-key K …` and `tenantflow smoke`. URL is the app's base URL without `/api`.

A problem-details answer becomes the OperationRefused the app's LocalOperator raised (same message, same field), so
the CLI prints the same in both modes. Anything else that goes wrong is a RemoteError: the app cannot be reached, the
operator key is refused, or the app answered 5xx or something that is not the API's JSON.
"""

from __future__ import annotations

import builtins
import json
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from shared.secret import Secret
from shared.services.operator import (
    AddedTenant,
    CredentialInput,
    IssuedKey,
    Json,
    OperationRefused,
    Operator,
    Reason,
)

TIMEOUT_SECONDS = 60.0
LOOPBACK = ("localhost", "127.0.0.1", "::1")
REASONS: dict[int, Reason] = {404: "missing", 409: "conflict", 400: "invalid", 413: "invalid", 422: "invalid"}


class RemoteError(Exception):
    """The remote app could not do the request, for a reason other than the request's content. `status` is the HTTP
    status (0: no answer)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def api_base(url: str) -> str:
    """`https://host[:port]` (a trailing `/` or `/api` is tolerated) → `https://host[:port]/api`."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"--url {url!r}: expected the app's base URL, http(s)://host[:port], without /api")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK:  # the operator key would travel in clear
        raise ValueError(f"--url {url!r}: use https (plain http only for a local app: localhost, 127.0.0.1)")
    base = url.strip().rstrip("/")
    return (base[: -len("/api")] if base.endswith("/api") else base) + "/api"


def segment(value: str) -> str:
    return quote(value, safe="")


class RemoteOperator(Operator):
    def __init__(self, url: str, operator_key: str, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base = api_base(url)
        self.http = httpx.AsyncClient(base_url=self.base, headers={"x-operator-key": operator_key},
                                      timeout=TIMEOUT_SECONDS, transport=transport)

    async def close(self) -> None:
        await self.http.aclose()

    async def call(self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None) -> Any:
        """The JSON answer (None for 204); raises OperationRefused or RemoteError."""
        try:
            response = await self.http.request(method, path, json=body, params=params)
        except httpx.HTTPError as exc:
            raise RemoteError(f"{self.base}{path}: no answer ({type(exc).__name__}: {exc})") from None
        if response.status_code == 204:
            return None
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.is_success and answer is not None:
            return answer
        problem = answer if isinstance(answer, dict) else {}
        detail = str(problem.get("detail") or f"HTTP {response.status_code}")
        if response.status_code in REASONS and problem:
            errors = problem.get("errors") or [{}]
            raise OperationRefused(detail, str(errors[0].get("field") or "body"), REASONS[response.status_code])
        if response.status_code in (401, 403):
            raise RemoteError(f"{self.base}: {detail} (check --operator-key / TENANTFLOW_OPERATOR_KEY)",
                              response.status_code)
        raise RemoteError(f"{method} {self.base}{path}: HTTP {response.status_code}: {detail[:300]}",
                          response.status_code)

    # --- tenants and API keys -------------------------------------------------------------------------------------
    async def add_tenant(self, tenant_id: str, name: str | None = None) -> AddedTenant:
        answer = await self.call("POST", "/admin/tenants", {"id": tenant_id, "name": name})
        key = IssuedKey(answer.pop("key_id"), Secret(answer.pop("key")))
        return AddedTenant(answer, key)

    async def list_tenants(self) -> builtins.list[Json]:
        return list(await self.call("GET", "/admin/tenants"))

    async def suspend_tenant(self, tenant_id: str) -> Json:
        return dict(await self.call("POST", f"/admin/tenants/{segment(tenant_id)}/suspend"))

    async def activate_tenant(self, tenant_id: str) -> Json:
        return dict(await self.call("POST", f"/admin/tenants/{segment(tenant_id)}/activate"))

    async def create_key(self, tenant_id: str) -> IssuedKey:
        answer = await self.call("POST", f"/admin/tenants/{segment(tenant_id)}/keys")
        return IssuedKey(answer["key_id"], Secret(answer["key"]))

    async def list_keys(self, tenant_id: str) -> builtins.list[Json]:
        return list(await self.call("GET", f"/admin/tenants/{segment(tenant_id)}/keys"))

    async def revoke_key(self, tenant_id: str, key_id: str) -> None:
        await self.call("DELETE", f"/admin/tenants/{segment(tenant_id)}/keys/{segment(key_id)}")

    # --- credentials ----------------------------------------------------------------------------------------------
    async def set_credential(self, tenant_id: str, name: str, credential: CredentialInput) -> Json:
        return dict(await self.call("PUT", f"/admin/tenants/{segment(tenant_id)}/credentials/{segment(name)}",
                                    credential.to_json()))

    async def get_credential(self, tenant_id: str, name: str) -> Json:
        return dict(await self.call("GET", f"/admin/tenants/{segment(tenant_id)}/credentials/{segment(name)}"))

    async def list_credentials(self, tenant_id: str) -> builtins.list[Json]:
        return list(await self.call("GET", f"/admin/tenants/{segment(tenant_id)}/credentials"))

    async def delete_credential(self, tenant_id: str, name: str) -> None:
        await self.call("DELETE", f"/admin/tenants/{segment(tenant_id)}/credentials/{segment(name)}")

    # --- budgets, schedules, usage --------------------------------------------------------------------------------
    async def set_budget(self, tenant_id: str, monthly_tokens: int | None, monthly_cost: str | None) -> Json:
        return dict(await self.call("PUT", f"/admin/tenants/{segment(tenant_id)}/budget",
                                    {"monthly_tokens": monthly_tokens, "monthly_cost": monthly_cost}))

    async def budget(self, tenant_id: str) -> Json:
        return dict(await self.call("GET", f"/admin/tenants/{segment(tenant_id)}/budget"))

    async def add_schedule(self, tenant_id: str, flow: str, cron: str, inputs: dict[str, str]) -> Json:
        return dict(await self.call("POST", "/admin/schedules",
                                    {"tenant": tenant_id, "flow": flow, "cron": cron, "inputs": inputs}))

    async def list_schedules(self, tenant_id: str | None = None) -> builtins.list[Json]:
        return list(await self.call("GET", "/admin/schedules", params={"tenant": tenant_id} if tenant_id else None))

    async def remove_schedule(self, schedule_id: str) -> None:
        await self.call("DELETE", f"/admin/schedules/{segment(schedule_id)}")

    async def usage(self, tenant_id: str | None, start: str | None, end: str | None, group_by: str) -> Json:
        if tenant_id is not None:
            await self.budget(tenant_id)  # GET /api/admin/usage shows an unknown tenant as empty; the CLI refuses it
        params = {name: value for name, value in (("tenant", tenant_id), ("from", start), ("to", end),
                                                  ("group_by", group_by), ("format", "json")) if value}
        return dict(await self.call("GET", "/admin/usage", params=params))


    async def set_model(self, tenant_id: str, alias: str, credential: str, deployment: str,
                        price_as: str | None) -> Json:
        return dict(await self.call("PUT", f"/admin/tenants/{segment(tenant_id)}/models/{segment(alias)}",
                                    {"credential": credential, "deployment": deployment, "price_as": price_as}))

    async def get_model(self, tenant_id: str, alias: str) -> Json:
        return dict(await self.call("GET", f"/admin/tenants/{segment(tenant_id)}/models/{segment(alias)}"))

    async def list_models(self, tenant_id: str) -> builtins.list[Json]:
        return list((await self.call("GET", f"/admin/tenants/{segment(tenant_id)}/models"))["models"])

    async def remove_model(self, tenant_id: str, alias: str) -> None:
        await self.call("DELETE", f"/admin/tenants/{segment(tenant_id)}/models/{segment(alias)}")


def problem_text(response: httpx.Response) -> str:
    """The `detail` of a problem-details answer, else the start of the body (for smoke's failure lines)."""
    try:
        return str(response.json().get("detail"))
    except (ValueError, AttributeError):
        return json.dumps(response.text[:200])
