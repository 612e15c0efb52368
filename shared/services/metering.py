"""Metering around every model call of a run: reserve budget → call → record usage (priced) → settle.

Reservation is an upper bound: prompt tokens ≤ UTF-8 bytes of the messages, completion ≤ max_completion_tokens
(when the tenant has a budget and the step sets no max, COMPLETION_BOUND is sent as the max so the bound holds).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from shared.engine.ports import ChatRequest, ChatResult, ModelPort, StepFailure
from shared.engine.usage import TokenUsage
from shared.services.prices import PriceBook
from shared.storage.models import Budget, UsageRecord
from shared.storage.ports import BudgetStore, UsageLedger

log = logging.getLogger(__name__)
COMPLETION_BOUND = 4096


def period_of(moment: datetime) -> str:
    return moment.strftime("%Y-%m")


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


class MeteredModelPort(ModelPort):
    """One per run: knows the tenant, run and flow it meters for."""

    def __init__(self, inner: ModelPort, ledger: UsageLedger, budgets: BudgetStore, prices: PriceBook,
                 tenant_id: str, run_id: str, flow_id: str, now: Callable[[], datetime] | None = None) -> None:
        self.inner = inner
        self.ledger = ledger
        self.budgets = budgets
        self.prices = prices
        self.tenant_id = tenant_id
        self.run_id = run_id
        self.flow_id = flow_id
        self.now = now or (lambda: datetime.now(UTC))
        self.budget: Budget | None = None
        self.budget_loaded = False
        self.records: list[UsageRecord] = []

    async def chat(self, request: ChatRequest) -> ChatResult:
        if not self.budget_loaded:
            self.budget = await self.budgets.get_budget(self.tenant_id)
            self.budget_loaded = True
        budget = self.budget
        limited = budget is not None and (budget.monthly_tokens is not None or budget.monthly_cost is not None)
        period = period_of(self.now())
        reserved_tokens, reserved_cost = 0, Decimal(0)
        if limited and budget is not None:
            if request.max_completion_tokens is None:
                request = replace(request, max_completion_tokens=COMPLETION_BOUND)
            completion = request.max_completion_tokens or COMPLETION_BOUND
            prompt = prompt_bound(request.messages)
            reserved_tokens = prompt + completion
            bound = TokenUsage(prompt, completion, prompt + completion)
            reserved_cost = self.prices.cost(self.tenant_id, bound, request.model) or Decimal(0)
            reservation = await self.budgets.reserve(self.tenant_id, period, reserved_tokens, reserved_cost,
                                                     budget.monthly_tokens, budget.monthly_cost)
            if not reservation.ok:
                c = reservation.counters
                if budget.monthly_tokens is not None and (
                    c.used_tokens + c.reserved_tokens + reserved_tokens > budget.monthly_tokens
                ):
                    raise BudgetExceeded(self.tenant_id, period, budget.monthly_tokens,
                                         c.used_tokens + c.reserved_tokens, "token")
                raise BudgetExceeded(self.tenant_id, period, budget.monthly_cost, c.used_cost + c.reserved_cost, "cost")
        try:
            result = await self.inner.chat(request)
        except BaseException:
            if limited:
                await self.budgets.settle(self.tenant_id, period, reserved_tokens, reserved_cost, 0, Decimal(0))
            raise
        cost = self.prices.cost(self.tenant_id, result.usage, request.model, result.model)
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
            cost=cost,
            recorded_at=self.now(),
        )
        try:
            await self.ledger.record([record])
        finally:
            if limited:
                await self.budgets.settle(self.tenant_id, period, reserved_tokens, reserved_cost,
                                          result.usage.total_tokens, cost or Decimal(0))
        self.records.append(record)
        return result

    def total_cost(self) -> Decimal | None:
        costs = [r.cost for r in self.records if r.cost is not None]
        return sum(costs, Decimal(0)) if costs else (None if self.records else Decimal(0))
