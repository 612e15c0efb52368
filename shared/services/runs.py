"""Run a flow for a tenant: check tenant, flow and inputs; record the run; execute it metered; store the outcome.

Every trigger (cli, http, webhook, queue, timer) goes through RunService, so every run is recorded the same way.
"""

from __future__ import annotations

import builtins
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from shared.engine.deadline import Deadline
from shared.engine.errors import FlowError
from shared.engine.executor import FlowExecutor, RunContext, RunObserver, RunOutcome
from shared.engine.inputs import coerce_inputs
from shared.engine.model import Flow
from shared.engine.ports import ModelPort
from shared.engine.worst_case import ModelCallLimits, flow_worst_case_seconds
from shared.services.catalog import FlowCatalog, FlowNotFound
from shared.services.metering import FUNCTION_TIMEOUT, MeteredModelPort, RunBook
from shared.services.prices import PriceBook
from shared.services.run_queue import QueueNotConfigured, RunQueue, UnconfiguredRunQueue
from shared.storage.models import BookBatch, Budget, RunRecord, StepRecord, Tenant
from shared.storage.ports import Stores, StoreUnavailable

log = logging.getLogger(__name__)
RUN_TIMEOUT = FUNCTION_TIMEOUT + timedelta(seconds=15)  # host.json functionTimeout + clock skew
BUDGET_CACHE_SECONDS = 5.0  # a budget change reaches other instances' runs within this bound
QUEUED_RESEND_AFTER = timedelta(minutes=2)  # a run `queued` this long may have lost its message: sent again
QUEUED_GIVE_UP = timedelta(hours=24)  # a run still `queued` this long is failed (its message cannot be sent)


class RunNotCompleted(Exception):
    """The run could not be carried out because of the app, not the flow: its store became unavailable
    (`cause` = "store_unavailable", answer 503 + Retry-After) or a bug interrupted it ("internal_error"). `run` is
    the run as far as it is known (its id lets a client look it up later). Never answered as a 200."""

    def __init__(self, run: RunRecord, cause: str, message: str) -> None:
        super().__init__(message)
        self.run = run
        self.cause = cause


class RunRefused(Exception):
    """The run cannot start. `code`: tenant_not_found | tenant_suspended (others are FlowNotFound, FlowError,
    InputError)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with another request (other body or flow)."""


class QueueUnavailable(Exception):
    """The run could not be sent to the queue. `kept`: the run stays `queued` (a retry with the same
    idempotency key sends it again); otherwise it was marked `rejected`. The message never holds a secret."""

    def __init__(self, reason: str, run_id: str, kept: bool) -> None:
        super().__init__(reason)
        self.reason, self.run_id, self.kept = reason, run_id, kept


@dataclass(frozen=True)
class StartedRun:
    run: RunRecord
    accepted: bool  # True: queued for the worker (answered 202); False: ran now (or an idempotent replay)


@dataclass
class Prepared:
    run: RunRecord
    created: bool  # False when a run with this id already existed (idempotent replay)
    flow: Flow | None
    tenant: Tenant
    stored: bool = True  # False: execute() stores the run with its first transaction


def new_run_id() -> str:
    return uuid.uuid4().hex


class RunService:
    def __init__(self, stores: Stores, catalog: FlowCatalog, model: ModelPort, executor_factory: Callable[
            [ModelPort], FlowExecutor], prices: PriceBook, now: Callable[[], datetime] | None = None,
                 queue: RunQueue | None = None, sync_limit_seconds: float = math.inf,
                 call_limits: ModelCallLimits | None = None, run_deadline_seconds: float = math.inf) -> None:
        self.stores = stores
        # a sync request for a longer flow runs from the queue; a sync run still going on at this limit fails
        self.sync_limit_seconds = sync_limit_seconds
        self.run_deadline_seconds = run_deadline_seconds  # the limit of every other run (queue, timer, CLI)
        self.call_limits = call_limits
        self.queue = queue or UnconfiguredRunQueue()
        self.catalog = catalog
        self.model = model
        self.executor_factory = executor_factory
        self.prices = prices
        self.now = now or (lambda: datetime.now(UTC))
        self.budgets: dict[str, tuple[float, Budget | None]] = {}

    async def budget(self, tenant_id: str) -> Budget | None:
        """The tenant's budget, cached for BUDGET_CACHE_SECONDS (set_budget in this process clears it)."""
        cached = self.budgets.get(tenant_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        budget = await self.stores.budgets.get_budget(tenant_id)
        self.budgets[tenant_id] = (time.monotonic() + BUDGET_CACHE_SECONDS, budget)
        return budget

    def forget_budget(self, tenant_id: str) -> None:
        self.budgets.pop(tenant_id, None)

    async def active_tenant(self, tenant_id: str) -> Tenant:
        tenant = await self.stores.tenants.get(tenant_id)
        if tenant is None:
            raise RunRefused(f"unknown tenant {tenant_id!r}", "tenant_not_found")
        if tenant.status != "active":
            raise RunRefused(f"tenant {tenant_id!r} is suspended; its runs are refused", "tenant_suspended")
        return tenant

    async def prepare(self, tenant_id: str, flow_ref: str | Flow, raw_inputs: Any, trigger: str, *,
                      run_id: str | None = None, from_strings: bool = False, status: str = "running",
                      idempotency_key: str | None = None, request_hash: str | None = None,
                      tenant: Tenant | None = None, record: bool = True, api_key_id: str | None = None) -> Prepared:
        """Checks tenant, flow and inputs (raising RunRefused / FlowNotFound / FlowError / InputError) and records
        the run with `status`. With an existing run_id nothing is re-checked or re-recorded: created=False.
        `tenant`: the caller's tenant, already authenticated and active (saves reading it again). With
        record=False (a new run id only) the run is not stored yet: `execute` stores it with its first
        transaction. `api_key_id`: the API key that asked for the run (its usage records carry it)."""
        if tenant is None or tenant.id != tenant_id or tenant.status != "active":
            tenant = await self.active_tenant(tenant_id)
        if run_id is not None:
            existing = await self.stores.runs.get(tenant_id, run_id)
            if existing is not None:
                return Prepared(existing, False, None, tenant)
        flow = flow_ref if isinstance(flow_ref, Flow) else self.catalog.get(flow_ref)  # a Flow: the CLI loaded a path
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
            api_key_id=api_key_id,
        )
        if not record and run_id is None:
            return Prepared(run, True, flow, tenant, stored=False)
        created = await self.stores.runs.create(run)
        if not created:
            existing = await self.stores.runs.get(tenant_id, run.run_id)
            return Prepared(existing or run, False, flow, tenant)
        return Prepared(run, True, flow, tenant)

    async def run(self, tenant_id: str, flow_ref: str | Flow, raw_inputs: Any, trigger: str, *,
                  observer: RunObserver | None = None, in_request: bool = False, **options: Any) -> RunRecord:
        """Prepares and executes a run now. An idempotent replay returns the stored run unchanged. A new run is
        stored with its first transaction (see `execute`). `observer` sees steps start and finish, and streamed
        tokens, while the run goes on. `in_request`: an HTTP request waits for it (see `execute`)."""
        prepared = await self.prepare(tenant_id, flow_ref, raw_inputs, trigger, record=False, **options)
        if not prepared.created or prepared.flow is None:
            return prepared.run
        return await self.execute(prepared.run, prepared.flow, prepared.tenant, stored=prepared.stored,
                                  observer=observer, in_request=in_request)

    async def start(self, tenant_id: str, flow_ref: str, inputs: Any, trigger: str, *, wait: bool,
                    idempotency_key: str | None = None, request_hash: str | None = None,
                    tenant: Tenant | None = None, api_key_id: str | None = None) -> StartedRun:
        """Runs now (`wait`) or records the run `queued` and sends it to the queue. With an idempotency key the
        run id derives from (tenant, key), so concurrent twins make one run, and a replay answers the stored run
        (re-sending a run still `queued`, whose message may have been lost). Raises IdempotencyConflict when the
        key was used with another request, QueueUnavailable when the queue refuses the message, and the
        refusals of `prepare` (`tenant`: the caller's, already authenticated, as there). A sync request for a flow
        whose worst case exceeds the sync limit is queued instead (when a queue is configured): the front end
        would cut it off."""
        if wait and self.too_long_to_wait(flow_ref):
            wait = False
        if idempotency_key:
            previous = await self.stores.runs.find_by_idempotency_key(tenant_id, idempotency_key)
            if previous is not None:
                if previous.request_hash != request_hash or previous.flow_id != flow_ref:
                    raise IdempotencyConflict("this Idempotency-Key was used with another request")
                if previous.status == "queued" and not wait:
                    await self.enqueue(previous, keep_on_failure=True)
                return StartedRun(previous, accepted=not wait)
        run_id = uuid.uuid5(uuid.NAMESPACE_URL, f"tenantflow:{tenant_id}:{idempotency_key}").hex \
            if idempotency_key else None
        options: dict[str, Any] = {"idempotency_key": idempotency_key, "request_hash": request_hash,
                                   "run_id": run_id, "tenant": tenant, "api_key_id": api_key_id}
        if wait:
            run = await self.run(tenant_id, flow_ref, inputs, trigger, in_request=True, **options)
            if run.request_hash != request_hash:
                raise IdempotencyConflict("this Idempotency-Key was used with another request")
            return StartedRun(run, accepted=False)
        prepared = await self.prepare(tenant_id, flow_ref, inputs, trigger, status="queued", **options)
        if prepared.run.request_hash != request_hash:
            raise IdempotencyConflict("this Idempotency-Key was used with another request")
        if prepared.run.status == "queued":  # new, or a concurrent twin's: the worker dedupes copies
            await self.enqueue(prepared.run, keep_on_failure=idempotency_key is not None)
        return StartedRun(prepared.run, accepted=True)

    def too_long_to_wait(self, flow_ref: str) -> bool:
        if self.call_limits is None or isinstance(self.queue, UnconfiguredRunQueue):
            return False
        try:
            flow = self.catalog.get(flow_ref)
        except (FlowNotFound, FlowError):
            return False  # refused with its reason by prepare
        return flow_worst_case_seconds(flow, self.call_limits) > self.sync_limit_seconds

    async def enqueue(self, run: RunRecord, keep_on_failure: bool) -> None:
        """Sends the run's message. If the queue refuses it, the run stays `queued` when the client can retry
        with its idempotency key (the retry sends it again); otherwise it is marked `rejected`."""
        try:
            await self.queue.send(queue_message(run))
        except Exception as exc:
            # the text of a transport error may hold a connection string: only QueueNotConfigured's is shown
            log.error("run %s could not be enqueued: %s", run.run_id, type(exc).__name__)
            reason = str(exc) if isinstance(exc, QueueNotConfigured) else "the run queue cannot be reached"
            if not keep_on_failure and await self.stores.runs.transition(run.tenant_id, run.run_id, ("queued",),
                                                                         "rejected"):
                stored = await self.stores.runs.get(run.tenant_id, run.run_id) or run
                stored.status, stored.error, stored.finished_at = "rejected", reason, self.now()
                await self.stores.runs.save(stored)
            raise QueueUnavailable(reason, run.run_id, kept=keep_on_failure) from None

    async def find(self, tenant_id: str, run_id: str) -> RunRecord | None:
        """The tenant's run; another tenant's run is as unknown as a missing one."""
        return await self.stores.runs.get(tenant_id, run_id)

    async def claim(self, tenant_id: str, run_id: str) -> bool:
        """queued → running; exactly one of many concurrent claimers gets True."""
        return await self.stores.runs.transition(tenant_id, run_id, ("queued",), "running")

    async def execute(self, run: RunRecord, flow: Flow, tenant: Tenant, stored: bool = True,
                      observer: RunObserver | None = None, in_request: bool = False) -> RunRecord:
        """Runs the flow, metered. Store transactions: the first (creating the run when `stored` is False) goes
        with the first model call's reserve, each charge with the next transaction, and the last holds the
        run's final state. A run that fails because of the app raises RunNotCompleted (never a 200). With
        telemetry configured, the run and each step are spans (shared.telemetry).

        The run has a deadline from now: the sync limit when an HTTP request waits for it (`in_request`), else the
        run deadline, both below the host's functionTimeout. Past it the run ends `failed` (deadline_exceeded),
        its served calls charged and its leases released, instead of being stopped by the host."""
        from shared.telemetry import telemetry_configured

        deadline = self.deadline_from_now(in_request)
        if not telemetry_configured():
            return await self.carry_out(run, flow, tenant, stored, observer, deadline)
        from shared.engine.observer import ObserverFanOut
        from shared.telemetry import StepSpans, telemetry

        traced = telemetry()
        with traced.run_span(tenant.id, flow.id, run.run_id, run.trigger) as span:
            steps = StepSpans(traced)
            done = await self.carry_out(run, flow, tenant, stored,
                                        ObserverFanOut(observer, steps) if observer else steps, deadline)
            span.status, span.error_code = done.status, done.usage.get("error_code")
            return done

    def deadline_from_now(self, in_request: bool) -> Deadline | None:
        """A run's deadline, told by the injected clock; None without a limit."""
        seconds, source = ((self.sync_limit_seconds, "TENANTFLOW_SYNC_LIMIT_SECONDS") if in_request
                           else (self.run_deadline_seconds, "TENANTFLOW_RUN_DEADLINE_SECONDS"))
        if math.isinf(seconds):
            return None
        started = self.now()
        return Deadline(seconds, lambda: seconds - (self.now() - started).total_seconds(), source)

    async def carry_out(self, run: RunRecord, flow: Flow, tenant: Tenant, stored: bool,
                        observer: RunObserver | None, deadline: Deadline | None) -> RunRecord:
        book = RunBook(self.stores.bookkeeping, tenant.id, new_run=None if stored else run)
        metered = MeteredModelPort(self.model, book, self.prices, run.run_id, flow.id,
                                   lambda: self.budget(tenant.id), now=self.now, api_key_id=run.api_key_id)
        executor = self.executor_factory(metered)
        context = RunContext(tenant.id, tenant.name, run.run_id, run.trigger, deadline)
        failure: tuple[str, str] | None = None
        try:
            outcome = await executor.run(flow, run.inputs, context, observer)
        except StoreUnavailable as exc:
            log.error("run %s of flow %s for tenant %s: store unavailable: %s", run.run_id, flow.id, tenant.id, exc)
            failure = ("store_unavailable", str(exc))
        except Exception as exc:  # a bug, not a flow failure: record it without details that could hold secrets
            log.exception("run %s of flow %s for tenant %s crashed", run.run_id, flow.id, tenant.id)
            failure = ("internal_error", f"internal error: {type(exc).__name__}")
        if failure is not None:
            outcome = RunOutcome("failed", None, [], metered.usage(), failure[1], failure[0])
        self.fill(run, outcome, metered)
        try:
            await book.commit(finish=run)
        except StoreUnavailable as exc:
            # served calls whose charge could not be written are logged (never silently lost) for reconciliation
            if book.charges:
                log.error("run %s of tenant %s: %d served model calls (%d tokens) could not be charged: %s",
                          run.run_id, tenant.id, len(book.charges), sum(r.total_tokens for r in book.charges), exc)
            raise RunNotCompleted(run, "store_unavailable", str(exc)) from None
        if failure is not None:
            raise RunNotCompleted(run, *failure)
        log.info("run %s flow=%s tenant=%s status=%s tokens=%s", run.run_id, flow.id, tenant.id, run.status,
                 outcome.usage.total_tokens)
        return run

    def fill(self, run: RunRecord, outcome: RunOutcome, metered: MeteredModelPort) -> None:
        run.status = outcome.status
        run.outputs = outcome.outputs
        run.error = outcome.error
        run.steps = [
            StepRecord(s.id, s.kind, s.status, round(s.duration_ms, 3), s.usage.as_dict() if s.usage else None,
                       s.error, s.iteration)
            for s in outcome.steps
        ]
        usage = metered.usage()
        cost = metered.total_cost()
        run.usage = {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
            "cached_tokens": usage.cached_tokens,
            "reasoning_tokens": usage.reasoning_tokens,
            "cost": str(cost) if cost is not None else None,
            "model_calls": len(metered.records),
        }
        if outcome.error_code:
            run.usage["error_code"] = outcome.error_code
            if outcome.error_details:
                run.usage["error_details"] = outcome.error_details
        run.finished_at = self.now()

    async def interrupt(self, run: RunRecord) -> RunRecord:
        """`running` → `failed` for a run whose worker stopped (exactly one copy wins); the usage its model calls
        recorded stays in the ledger and is summed onto the run, and the leases it still holds are released."""
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
        await self.stores.bookkeeping.commit(BookBatch(run.tenant_id, finish_run=run))
        log.error("run %s of tenant %s interrupted: running since %s", run.run_id, run.tenant_id, run.started_at)
        return run

    async def sweep_interrupted(self, limit: int = 100) -> list[RunRecord]:
        """Marks every run still `running` past RUN_TIMEOUT as interrupted, whatever started it (an HTTP or
        webhook run whose host stopped has no queue message to find it). Called by the `schedules` timer."""
        stale = await self.stores.runs.list_stale_running(self.now() - RUN_TIMEOUT, limit)
        interrupted = [await self.interrupt(run) for run in stale]
        released = await self.stores.bookkeeping.release_expired(self.now())
        if released:
            log.warning("sweep: released %d expired budget leases", released)
        return interrupted

    async def sweep_queued(self, limit: int = 100) -> tuple[builtins.list[RunRecord], builtins.list[RunRecord]]:
        """Sends again every run `queued` for longer than QUEUED_RESEND_AFTER (its message may have been lost to
        a queue outage; the worker dedupes copies), and fails those queued longer than QUEUED_GIVE_UP. A run
        whose message cannot be sent now stays `queued` for the next sweep. Returns (re-sent, failed). Called by
        the `schedules` timer."""
        now = self.now()
        resent: builtins.list[RunRecord] = []
        failed: builtins.list[RunRecord] = []
        for run in await self.stores.runs.list_stale_queued(now - QUEUED_RESEND_AFTER, limit):
            if run.created_at < now - QUEUED_GIVE_UP:
                if await self.stores.runs.transition(run.tenant_id, run.run_id, ("queued",), "failed"):
                    run = await self.stores.runs.get(run.tenant_id, run.run_id) or run
                    run.status, run.finished_at = "failed", now
                    run.error = (f"not delivered: still queued after {int(QUEUED_GIVE_UP.total_seconds() // 3600)} "
                                 "hours (the run queue could not take its message)")
                    run.usage = {**run.usage, "error_code": "not_delivered"}
                    await self.stores.runs.save(run)
                    failed.append(run)
                continue
            try:
                await self.queue.send(queue_message(run))
            except Exception as exc:  # the queue is still down: the next sweep tries again
                log.error("queued run %s not re-sent: %s", run.run_id, type(exc).__name__)
                break
            resent.append(run)
        return resent, failed

    async def reject(self, tenant_id: str, flow_id: str, run_id: str | None, trigger: str, reason: str) -> RunRecord:
        """Records a run that was refused before it started (a malformed message). No model call is made."""
        run = RunRecord(run_id=run_id or new_run_id(), tenant_id=tenant_id, flow_id=flow_id or "?", flow_hash="",
                        trigger=trigger, status="rejected", error=reason, created_at=self.now(),
                        finished_at=self.now())
        if not await self.stores.runs.create(run):
            existing = await self.stores.runs.get(tenant_id, run.run_id)
            return existing or run
        return run


def queue_message(run: RunRecord) -> dict[str, Any]:
    """The `flow-runs` message of a run; with telemetry configured, it carries the current trace context
    (`traceparent`, `tracestate`), which the queue worker continues."""
    from shared.telemetry import inject_trace_context, telemetry_configured

    message = {"run_id": run.run_id, "tenant": run.tenant_id, "flow": run.flow_id, "inputs": run.inputs,
               "trigger": run.trigger}
    return dict(inject_trace_context(message)) if telemetry_configured() else message


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
