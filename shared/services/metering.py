"""Metering around every model call of a run, through the run's book.

Per model call there is one atomic reserve before the call (a lease: run id + expiry) and one atomic charge
after it (the ledger record and the counters move together, and the lease is released). The charge is not
written on its own: it rides with the run's next store transaction — the next call's reserve, or the run's
final state — so a 1-step run costs two store transactions (create + reserve, charge + finish), each one round
trip on PostgreSQL. Every transaction is idempotent, so a failed one is simply sent again with the next.

Reservation is an upper bound: prompt tokens ≤ UTF-8 bytes of the messages, completion ≤ max_completion_tokens
(when the tenant has a budget and the step sets no max, COMPLETION_BOUND is sent as the max so the bound holds).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from shared.engine.ports import ChatRequest, ChatResult, ModelPort, StepFailure
from shared.engine.usage import TokenUsage
from shared.services.prices import PriceBook
from shared.settings import FUNCTION_TIMEOUT_SECONDS
from shared.storage.models import BookBatch, BookResult, Budget, Lease, RunRecord, UsageRecord, period_of
from shared.storage.ports import Bookkeeping, StoreUnavailable

log = logging.getLogger(__name__)
COMPLETION_BOUND = 4096
FUNCTION_TIMEOUT = timedelta(seconds=FUNCTION_TIMEOUT_SECONDS)  # host.json functionTimeout: no invocation outlives it
LEASE_TTL = FUNCTION_TIMEOUT + timedelta(minutes=1)  # a lease outlives its call by at most this; the sweep frees it
CLOSE_RETRY_SECONDS = 30.0  # a run's closing transaction is retried this long; the run deadline leaves room for it


def period_reset(period: str) -> datetime:
    year, month = (int(p) for p in period.split("-"))
    return datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)


def prompt_bound(messages: list[dict[str, Any]]) -> int:
    """An upper bound of prompt tokens: every token is at least one UTF-8 byte; +8 per message of overhead."""
    return sum(len(json.dumps(m.get("content"), ensure_ascii=False).encode()) + 8 for m in messages) + 8


class BudgetExceeded(StepFailure):
    def __init__(self, tenant_id: str, period: str, limit: Any, used: Any, what: str) -> None:
        reset = period_reset(period).isoformat().replace("+00:00", "Z")
        super().__init__(
            f"budget_exceeded: tenant {tenant_id} {what} budget for {period} is {limit}, {used} already used or "
            f"reserved; resets {reset}",
            "budget_exceeded",
            {"limit": str(limit), "used": str(used), "reset": reset, "period": period, "limit_kind": what},
        )


class RunBook:
    """The bookkeeping of one run: what it has still to write (the run itself, when it is created lazily;
    charges; released leases), sent with the run's next transaction. Safe for concurrent model calls (a
    for_each with concurrency): commits are serialised."""

    def __init__(self, store: Bookkeeping, tenant_id: str, new_run: RunRecord | None = None,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                 close_deadline: float = CLOSE_RETRY_SECONDS) -> None:
        self.store = store
        self.tenant_id = tenant_id
        self.new_run = new_run  # inserted by the first commit
        self.charges: list[UsageRecord] = []
        self.released: list[str] = []
        self.lock = asyncio.Lock()
        self.reserved = False  # a reserve was sent (even one that failed: its lease may exist)
        self.sleep = sleep
        self.close_deadline = close_deadline

    def charge(self, record: UsageRecord, lease: Lease | None) -> None:
        self.charges.append(record)
        if lease is not None:
            self.released.append(lease.lease_id)

    def release(self, lease: Lease) -> None:
        self.released.append(lease.lease_id)

    @property
    def pending(self) -> bool:
        return bool(self.new_run or self.charges or self.released)

    async def commit(self, reserve: Lease | None = None, limits: Budget | None = None,
                     finish: RunRecord | None = None) -> BookResult:
        """Sends what is pending with `reserve` / `finish` in one transaction. On failure it all stays pending."""
        async with self.lock:
            self.reserved = self.reserved or reserve is not None
            batch = BookBatch(self.tenant_id, self.new_run, tuple(self.charges), tuple(self.released), reserve,
                              limits, finish, leases_held=self.reserved)
            if batch.empty:
                return BookResult()
            result = await (self.close(batch) if finish is not None else self.store.commit(batch))
            if result.created is False:
                raise RuntimeError("a new run id collided with an existing run")
            self.new_run = None
            del self.charges[:len(batch.charges)]
            del self.released[:len(batch.released)]
            return result

    async def close(self, batch: BookBatch) -> BookResult:
        """The closing transaction holds served calls: it is retried with backoff (it is idempotent) until
        `close_deadline` seconds have passed, then StoreUnavailable propagates."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.close_deadline
        attempt = 0
        while True:
            try:
                return await self.store.commit(batch)
            except StoreUnavailable:
                attempt += 1
                if loop.time() >= deadline:
                    raise
                await self.sleep(min(0.05 * 2 ** attempt, 2.0) * (0.5 + random.random() / 2))


class MeteredModelPort(ModelPort):
    """One per run: reserves before each call and charges after it, through the run's book."""

    def __init__(self, inner: ModelPort, book: RunBook, prices: PriceBook, run_id: str, flow_id: str,
                 budget: Callable[[], Awaitable[Budget | None]], now: Callable[[], datetime] | None = None,
                 api_key_id: str | None = None) -> None:
        self.inner = inner
        self.api_key_id = api_key_id
        self.book = book
        self.prices = prices
        self.tenant_id = book.tenant_id
        self.run_id = run_id
        self.flow_id = flow_id
        self.budget = budget
        self.now = now or (lambda: datetime.now(UTC))
        self.records: list[UsageRecord] = []

    async def chat(self, request: ChatRequest) -> ChatResult:
        budget = await self.budget()
        lease: Lease | None = None
        if budget is not None and (budget.monthly_tokens is not None or budget.monthly_cost is not None):
            if request.max_completion_tokens is None:
                request = replace(request, max_completion_tokens=COMPLETION_BOUND)
            lease = self.lease_for(request)
            reservation = await self.book.commit(reserve=lease, limits=budget)
            if not reservation.reserved:
                raise self.refusal(budget, lease, reservation)
        else:
            await self.book.commit()  # the run exists, and earlier calls are charged, before this call is made
        try:
            result = await self.inner.chat(request)
        except BaseException:
            if lease is not None:
                self.book.release(lease)
            raise
        record = UsageRecord(
            tenant_id=self.tenant_id,
            run_id=self.run_id,
            flow_id=self.flow_id,
            step_id=request.step_id,
            iteration=request.iteration,
            attempt=result.attempt,
            model=request.model,
            endpoint_host=result.endpoint_host,
            prompt_tokens=result.usage.prompt_tokens,
            completion_tokens=result.usage.completion_tokens,
            total_tokens=result.usage.total_tokens,
            cached_tokens=result.usage.cached_tokens,
            reasoning_tokens=result.usage.reasoning_tokens,
            cost=self.prices.cost(self.tenant_id, result.usage, result.model, request.model),  # served first
            recorded_at=self.now(),
            api_key_id=self.api_key_id,
        )
        self.book.charge(record, lease)
        self.records.append(record)
        return result

    def lease_for(self, request: ChatRequest) -> Lease:
        completion = request.max_completion_tokens or COMPLETION_BOUND
        prompt = prompt_bound(request.messages)
        bound = TokenUsage(prompt, completion, prompt + completion)
        cost = self.prices.cost(self.tenant_id, bound, request.model) or Decimal(0)
        now = self.now()
        return Lease(self.tenant_id, f"{self.run_id}|{request.step_id}|{request.iteration}", self.run_id,
                     period_of(now), prompt + completion, cost, now + LEASE_TTL)

    def refusal(self, budget: Budget, lease: Lease, reservation: BookResult) -> BudgetExceeded:
        c = reservation.counters
        used_tokens = (c.used_tokens + c.reserved_tokens) if c else 0
        if budget.monthly_tokens is not None and used_tokens + lease.tokens > budget.monthly_tokens:
            return BudgetExceeded(self.tenant_id, lease.period, budget.monthly_tokens, used_tokens, "token")
        used_cost = (c.used_cost + c.reserved_cost) if c else Decimal(0)
        return BudgetExceeded(self.tenant_id, lease.period, budget.monthly_cost, used_cost, "cost")

    def usage(self) -> TokenUsage:
        total = TokenUsage()
        for r in self.records:
            total = total + TokenUsage(r.prompt_tokens, r.completion_tokens, r.total_tokens, r.cached_tokens,
                                       r.reasoning_tokens)
        return total

    def total_cost(self) -> Decimal | None:
        costs = [r.cost for r in self.records if r.cost is not None]
        return sum(costs, Decimal(0)) if costs else (None if self.records else Decimal(0))
