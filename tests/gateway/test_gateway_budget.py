"""Budgets hold under concurrency: simultaneous gateway requests against a small budget never overspend, on SQLite
and PostgreSQL (the same atomic reserve as flow runs)."""

from __future__ import annotations

import asyncio
import json

import httpx

from shared.services.metering import prompt_bound
from shared.storage.models import Budget, period_of

REQUESTS = 200
SERVED = 10
MAX_TOKENS = 16
# "!" is one byte and one token, so the lease (a byte bound of the prompt + max_tokens) is within 10 % of what a call
# uses. Then no 11th request fits even after all ten settled, and the test does not depend on all 200 arriving
# before the first answer (on a slow machine they may not).
PADDING = "!" * 400


async def many_at_once(gateway):
    key = await gateway.tenant("acme")
    messages = [{"role": "user", "content": f"[[fault:latency=1500]]{PADDING}"}]
    lease = prompt_bound(messages) + MAX_TOKENS  # what each request reserves
    await gateway.svc.stores.budgets.set_budget(Budget("acme", monthly_tokens=SERVED * lease))
    body = json.dumps({"model": "chat", "messages": messages, "max_tokens": MAX_TOKENS}).encode()
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=REQUESTS + 10), timeout=60) as http:
        answers = await asyncio.gather(*(
            http.post(f"{gateway.base}/api/v1/chat/completions", content=body,
                      headers={"authorization": f"Bearer {key}", "content-type": "application/json"})
            for _ in range(REQUESTS)))
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == SERVED and statuses.count(429) == REQUESTS - SERVED
    refused = next(a for a in answers if a.status_code == 429)
    assert refused.json()["error"]["code"] == "budget_exceeded" and int(refused.headers["retry-after"]) > 0
    counters = await gateway.svc.stores.budgets.counters("acme", period_of(gateway.svc.clock.now()))
    served_tokens = sum(a.json()["usage"]["total_tokens"] for a in answers if a.status_code == 200)
    assert counters.used_tokens == served_tokens <= SERVED * lease and counters.reserved_tokens == 0
    assert SERVED * lease - served_tokens < lease  # the premise above: nothing left for an 11th, whenever it came
    return answers


async def test_200_simultaneous_requests_against_a_10_call_budget_serve_exactly_10_on_sqlite(gateway):
    await many_at_once(gateway)


async def test_200_simultaneous_requests_against_a_10_call_budget_serve_exactly_10_on_postgres(gateway_on_postgres):
    await many_at_once(gateway_on_postgres)
