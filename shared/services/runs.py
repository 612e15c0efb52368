"""Run a flow for a tenant: check tenant, flow and inputs; record the run; execute it metered; store the outcome.

Every trigger (cli, http, webhook, queue, timer) goes through RunService, so every run is recorded the same way.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from shared.engine.executor import FlowExecutor, RunContext, RunObserver, RunOutcome
from shared.engine.inputs import coerce_inputs
from shared.engine.model import Flow
from shared.engine.ports import ModelPort
from shared.services.catalog import FlowCatalog
from shared.services.metering import MeteredModelPort
from shared.services.prices import PriceBook
from shared.storage.models import RunRecord, StepRecord, Tenant
from shared.storage.ports import Stores

log = logging.getLogger(__name__)
RUN_TIMEOUT = timedelta(minutes=10, seconds=15)  # host.json functionTimeout (10 min) + clock skew


class RunRefused(Exception):
    """The run cannot start. `code`: tenant_not_found | tenant_suspended (others are FlowNotFound, FlowError,
    InputError)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Prepared:
    run: RunRecord
    created: bool  # False when a run with this id already existed (idempotent replay)
    flow: Flow | None
    tenant: Tenant


def new_run_id() -> str:
    return uuid.uuid4().hex


class RunService:
    def __init__(self, stores: Stores, catalog: FlowCatalog, model: ModelPort, executor_factory: Callable[
            [ModelPort], FlowExecutor], prices: PriceBook, now: Callable[[], datetime] | None = None) -> None:
        self.stores = stores
        self.catalog = catalog
        self.model = model
        self.executor_factory = executor_factory
        self.prices = prices
        self.now = now or (lambda: datetime.now(UTC))

    async def active_tenant(self, tenant_id: str) -> Tenant:
        tenant = await self.stores.tenants.get(tenant_id)
        if tenant is None:
            raise RunRefused(f"unknown tenant {tenant_id!r}", "tenant_not_found")
        if tenant.status != "active":
            raise RunRefused(f"tenant {tenant_id!r} is suspended; its runs are refused", "tenant_suspended")
        return tenant

    async def prepare(self, tenant_id: str, flow_ref: str, raw_inputs: Any, trigger: str, *,
                      run_id: str | None = None, from_strings: bool = False, status: str = "running",
                      idempotency_key: str | None = None, request_hash: str | None = None) -> Prepared:
        """Checks tenant, flow and inputs (raising RunRefused / FlowNotFound / FlowError / InputError) and records
        the run with `status`. With an existing run_id nothing is re-checked or re-recorded: created=False."""
        tenant = await self.active_tenant(tenant_id)
        if run_id is not None:
            existing = await self.stores.runs.get(tenant_id, run_id)
            if existing is not None:
                return Prepared(existing, False, None, tenant)
        flow = self.catalog.get(flow_ref)
        inputs = coerce_inputs(flow, raw_inputs if raw_inputs is not None else {}, from_strings=from_strings)
        run = RunRecord(
            run_id=run_id or new_run_id(),
            tenant_id=tenant_id,
            flow_id=flow.id,
            flow_hash=flow.content_hash,
            trigger=trigger,
            status=status,
            inputs=inputs,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            created_at=self.now(),
            started_at=self.now() if status == "running" else None,
        )
        created = await self.stores.runs.create(run)
        if not created:
            existing = await self.stores.runs.get(tenant_id, run.run_id)
            return Prepared(existing or run, False, flow, tenant)
        return Prepared(run, True, flow, tenant)

    async def run(self, tenant_id: str, flow_ref: str, raw_inputs: Any, trigger: str, *,
                  observer: RunObserver | None = None, **options: Any) -> RunRecord:
        """Prepares and executes a run now (sync). An idempotent replay returns the stored run unchanged.
        `observer` sees steps start and finish, and streamed tokens, while the run goes on."""
        prepared = await self.prepare(tenant_id, flow_ref, raw_inputs, trigger, **options)
        if not prepared.created or prepared.flow is None:
            return prepared.run
        return await self.execute(prepared.run, prepared.flow, prepared.tenant, observer)

    async def claim(self, tenant_id: str, run_id: str) -> bool:
        """queued → running; exactly one of many concurrent claimers gets True."""
        return await self.stores.runs.transition(tenant_id, run_id, ("queued",), "running")

    async def execute(self, run: RunRecord, flow: Flow, tenant: Tenant,
                      observer: RunObserver | None = None) -> RunRecord:
        metered = MeteredModelPort(self.model, self.stores.usage, self.stores.budgets, self.prices,
                                   tenant.id, run.run_id, flow.id, now=self.now)
        executor = self.executor_factory(metered)
        context = RunContext(tenant.id, tenant.name, run.run_id, run.trigger)
        try:
            outcome = await executor.run(flow, run.inputs, context, observer)
        except Exception as exc:  # a bug, not a flow failure: record it without details that could hold secrets
            log.exception("run %s of flow %s for tenant %s crashed", run.run_id, flow.id, tenant.id)
            outcome = RunOutcome("failed", None, [], metered_usage(metered), f"internal error: {type(exc).__name__}",
                                 "internal_error")
        run.status = outcome.status
        run.outputs = outcome.outputs
        run.error = outcome.error
        run.steps = [
            StepRecord(s.id, s.kind, s.status, round(s.duration_ms, 3), s.usage.as_dict() if s.usage else None,
                       s.error, s.iteration)
            for s in outcome.steps
        ]
        cost = metered.total_cost()
        run.usage = {
            "prompt_tokens": outcome.usage.prompt_tokens,
            "completion_tokens": outcome.usage.completion_tokens,
            "total_tokens": outcome.usage.total_tokens,
            "cached_tokens": outcome.usage.cached_tokens,
            "reasoning_tokens": outcome.usage.reasoning_tokens,
            "cost": str(cost) if cost is not None else None,
            "model_calls": len(metered.records),
        }
        if outcome.error_code:
            run.usage["error_code"] = outcome.error_code
            if outcome.error_details:
                run.usage["error_details"] = outcome.error_details
        run.finished_at = self.now()
        await self.stores.runs.save(run)
        log.info("run %s flow=%s tenant=%s status=%s tokens=%s", run.run_id, flow.id, tenant.id, run.status,
                 outcome.usage.total_tokens)
        return run

    async def interrupt(self, run: RunRecord) -> RunRecord:
        """`running` → `failed` for a run whose worker stopped (exactly one copy wins); the usage its model calls
        recorded stays in the ledger and is summed onto the run."""
        store = self.stores.runs
        if not await store.transition(run.tenant_id, run.run_id, ("running",), "failed"):
            return await store.get(run.tenant_id, run.run_id) or run
        run = await store.get(run.tenant_id, run.run_id) or run
        records = await self.stores.usage.list_for_run(run.tenant_id, run.run_id)
        costs = [r.cost for r in records if r.cost is not None]
        run.status = "failed"
        run.error = (f"interrupted: the run did not finish within {int(RUN_TIMEOUT.total_seconds() // 60)} minutes "
                     "(its worker stopped); not re-run, so that no model call is made twice")
        run.usage = {"prompt_tokens": sum(r.prompt_tokens for r in records),
                     "completion_tokens": sum(r.completion_tokens for r in records),
                     "total_tokens": sum(r.total_tokens for r in records),
                     "cached_tokens": sum(r.cached_tokens for r in records),
                     "reasoning_tokens": sum(r.reasoning_tokens for r in records),
                     "cost": str(sum(costs)) if costs else None, "model_calls": len(records),
                     "error_code": "interrupted"}
        run.finished_at = self.now()
        await store.save(run)
        log.error("run %s of tenant %s interrupted: running since %s", run.run_id, run.tenant_id, run.started_at)
        return run

    async def sweep_interrupted(self, limit: int = 100) -> list[RunRecord]:
        """Marks every run still `running` past RUN_TIMEOUT as interrupted, whatever started it (an HTTP or
        webhook run whose host stopped has no queue message to find it). Called by the `schedules` timer."""
        stale = await self.stores.runs.list_stale_running(self.now() - RUN_TIMEOUT, limit)
        return [await self.interrupt(run) for run in stale]

    async def reject(self, tenant_id: str, flow_id: str, run_id: str | None, trigger: str, reason: str) -> RunRecord:
        """Records a run that was refused before it started (a malformed message). No model call is made."""
        run = RunRecord(run_id=run_id or new_run_id(), tenant_id=tenant_id, flow_id=flow_id or "?", flow_hash="",
                        trigger=trigger, status="rejected", error=reason, created_at=self.now(),
                        finished_at=self.now())
        if not await self.stores.runs.create(run):
            existing = await self.stores.runs.get(tenant_id, run.run_id)
            return existing or run
        return run


def metered_usage(metered: MeteredModelPort) -> Any:
    from shared.engine.usage import TokenUsage

    total = TokenUsage()
    for record in metered.records:
        total = total + TokenUsage(record.prompt_tokens, record.completion_tokens, record.total_tokens,
                                   record.cached_tokens, record.reasoning_tokens)
    return total


def run_to_json(run: RunRecord) -> dict[str, Any]:
    """The run object of the CLI (`run --json`) and HTTP contract."""
    usage = run.usage or {}
    cost = usage.get("cost")
    return {
        "run_id": run.run_id,
        "tenant": run.tenant_id,
        "flow": run.flow_id,
        "flow_hash": run.flow_hash,
        "trigger": run.trigger,
        "status": run.status,
        "outputs": run.outputs,
        "error": run.error,
        "error_code": usage.get("error_code"),
        "usage": {
            "prompt_tokens": usage.get("prompt_tokens", 0),
            "completion_tokens": usage.get("completion_tokens", 0),
            "total_tokens": usage.get("total_tokens", 0),
            "cost": str(Decimal(cost)) if cost is not None else None,
        },
        "steps": [
            {"id": s.id, "kind": s.kind, "status": s.status, "duration_ms": s.duration_ms, "usage": s.usage,
             "error": s.error, "iteration": s.iteration}
            for s in run.steps
        ],
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
    }


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None
