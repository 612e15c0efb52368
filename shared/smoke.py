"""`tenantflow smoke`: a deployment checked end to end over HTTP, one line per check.

A throwaway tenant (`smoke-<random>`) is added through the operator API, given a credential (`foundry`: the emulator,
or the endpoint and key given) and a new API key; `support-reply` runs with that key; the usage ledger must hold
exactly the tokens the run reports, and the budget counters the same; then the tenant is retired: its keys revoked,
its credential deleted, and the tenant suspended (the operator API removes no tenant: its ledger stays, for billing).
A retired key must then be refused. Exit 0 only when every check passed; the first failing check is named.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import httpx

from shared.operator_client import RemoteError, RemoteOperator, problem_text
from shared.secret import MASK, Secret
from shared.services.operator import CredentialInput, OperationRefused

EMULATOR_ENDPOINT = "http://127.0.0.1:8765"
EMULATOR_KEY = "smoke-test-key"
CREDENTIAL = "foundry"  # the credential support-reply loads
SMOKE_TOKEN_BUDGET = 1_000_000


class CheckFailed(Exception):
    """A check's one-line reason."""


class Smoke:
    def __init__(self, url: str, operator_key: str, endpoint: str | None, api_key: str | None, model: str,
                 out: Callable[[str], None]) -> None:
        self.operator = RemoteOperator(url, operator_key)
        self.http = httpx.AsyncClient(base_url=self.operator.base, timeout=120.0)
        self.endpoint = endpoint or EMULATOR_ENDPOINT
        self.api_key = Secret(api_key or EMULATOR_KEY)
        self.model = model
        self.out = out
        self.tenant = f"smoke-{secrets.token_hex(4)}"
        self.key: Secret | None = None
        self.key_ids: list[str] = []
        self.run: dict[str, Any] = {}
        self.passed = 0
        self.failed: str | None = None

    async def check(self, name: str, step: Callable[[], Awaitable[str]]) -> bool:
        started = time.perf_counter()
        try:
            detail = await step()
        except (CheckFailed, OperationRefused, RemoteError, httpx.HTTPError) as exc:
            self.out(f"FAIL  {name}: {exc}")
            self.failed = self.failed or name
            return False
        self.passed += 1
        self.out(f"ok    {name}: {detail} ({(time.perf_counter() - started) * 1000:.0f} ms)")
        return True

    # --- the checks, in order -------------------------------------------------------------------------------------
    async def health(self) -> str:
        response = await self.http.get("/health")
        if response.status_code != 200:
            raise CheckFailed(f"GET /api/health answered {response.status_code}: {problem_text(response)}")
        components = response.json().get("components", {})
        return ", ".join(f"{name} {c.get('status')}" for name, c in components.items()) or "ok"

    async def add_tenant(self) -> str:
        added = await self.operator.add_tenant(self.tenant, "Tenantflow smoke test")
        self.key_ids.append(added.key.key_id)
        if added.tenant.get("status") != "active":
            raise CheckFailed(f"tenant {self.tenant} was added {added.tenant.get('status')}, not active")
        return f"tenant {self.tenant} added"

    async def set_credential(self) -> str:
        view = await self.operator.set_credential(self.tenant, CREDENTIAL, CredentialInput(
            kind="azure_openai", endpoint=self.endpoint, api_key=self.api_key))
        shown = await self.operator.get_credential(self.tenant, CREDENTIAL)
        secret = self.api_key.reveal()
        if MASK != view.get("api_key") or MASK != shown.get("api_key") or (len(secret) >= 8 and secret in json.dumps(
                [view, shown])):
            raise CheckFailed("the API answered the credential's secret instead of masking it")
        return f"credential {CREDENTIAL} at {self.endpoint} (key masked)"

    async def create_key(self) -> str:
        issued = await self.operator.create_key(self.tenant)
        self.key, self.key_ids = issued.key, [*self.key_ids, issued.key_id]
        keys = await self.operator.list_keys(self.tenant)
        if {key["key_id"]: key["status"] for key in keys}.get(issued.key_id) != "active":
            raise CheckFailed(f"key {issued.key_id} is not listed as active")
        if issued.key.reveal() in json.dumps(keys):
            raise CheckFailed("the key listing shows the key itself")
        return f"API key {issued.key_id} created"

    async def run_flow(self) -> str:
        assert self.key is not None
        response = await self.http.post("/flows/support-reply/runs", headers={"x-api-key": self.key.reveal()},
                                        json={"inputs": {"ticket": "Smoke test: is this deployment answering?",
                                                         "model": self.model}})
        if response.status_code != 200:
            raise CheckFailed(f"POST /api/flows/support-reply/runs answered {response.status_code}: "
                              f"{problem_text(response)}")
        self.run = response.json()
        tokens = self.run.get("usage", {}).get("total_tokens", 0)
        if self.run.get("status") != "succeeded" or not tokens:
            raise CheckFailed(f"run {self.run.get('run_id')} {self.run.get('status')}: {self.run.get('error')}")
        return f"run {self.run['run_id']} succeeded, {tokens} tokens, cost {self.run['usage'].get('cost')}"

    async def usage(self) -> str:
        summary = await self.operator.usage(self.tenant, None, None, "day")
        totals, reported = summary["totals"], self.run["usage"]
        if (totals["total_tokens"], totals["runs"]) != (reported["total_tokens"], 1):
            raise CheckFailed(f"the ledger holds {totals['total_tokens']} tokens in {totals['runs']} runs; the run "
                              f"reported {reported['total_tokens']} in 1")
        if (totals["cost"] is None) != (reported.get("cost") is None) or (
                totals["cost"] is not None and Decimal(totals["cost"]) != Decimal(reported["cost"])):
            raise CheckFailed(f"the ledger's cost {totals['cost']} is not the run's {reported.get('cost')}")
        return f"ledger = run: {totals['total_tokens']} tokens, cost {totals['cost']}"

    async def budget(self) -> str:
        status = await self.operator.set_budget(self.tenant, SMOKE_TOKEN_BUDGET, None)
        tokens = self.run["usage"]["total_tokens"]
        if (status["used_tokens"], status["reserved_tokens"]) != (tokens, 0):
            raise CheckFailed(f"budget counters: {status['used_tokens']} used + {status['reserved_tokens']} reserved; "
                              f"expected {tokens} + 0")
        return f"{status['used_tokens']} of {status['monthly_tokens']} tokens used in {status['period']}"

    async def retire(self) -> str:
        for key_id in self.key_ids:
            await self.operator.revoke_key(self.tenant, key_id)
        try:
            await self.operator.delete_credential(self.tenant, CREDENTIAL)
        except OperationRefused as exc:
            if exc.reason != "missing":
                raise
        suspended = await self.operator.suspend_tenant(self.tenant)
        if suspended.get("status") != "suspended":
            raise CheckFailed(f"tenant {self.tenant} is {suspended.get('status')}, not suspended")
        if self.key is not None:
            refused = await self.http.post("/flows/support-reply/runs", headers={"x-api-key": self.key.reveal()},
                                           json={"inputs": {"ticket": "after retirement"}})
            if refused.status_code not in (401, 403):
                raise CheckFailed(f"a revoked key of a suspended tenant was answered {refused.status_code}")
        return (f"tenant {self.tenant} suspended, {len(self.key_ids)} keys revoked, credential deleted; its key is "
                "refused")

    async def close(self) -> None:
        await self.http.aclose()
        await self.operator.close()


async def run_smoke(url: str, operator_key: str, *, endpoint: str | None = None, api_key: str | None = None,
                    model: str = "gpt-4o-mini", out: Callable[[str], None] = print) -> bool:
    smoke = Smoke(url, operator_key, endpoint, api_key, model, out)
    steps: list[tuple[str, Callable[[], Awaitable[str]]]] = [
        ("credential set", smoke.set_credential), ("API key created", smoke.create_key),
        ("support-reply run", smoke.run_flow), ("usage recorded", smoke.usage), ("budget counted", smoke.budget)]
    try:
        if await smoke.check("health", smoke.health) and await smoke.check("tenant added", smoke.add_tenant):
            for name, step in steps:
                if not await smoke.check(name, step):
                    break
            await smoke.check("tenant retired", smoke.retire)  # also after a failure: nothing stays usable
    finally:
        await smoke.close()
    total = 2 + len(steps) + 1
    if smoke.failed is None:
        out(f"smoke: all {total} checks passed against {smoke.operator.base}")
        return True
    out(f"smoke: FAILED at {smoke.failed!r} ({smoke.passed} of {total} checks passed)")
    return False
