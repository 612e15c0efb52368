"""Processing one `flow-runs` message, idempotently on its run id.

Message: JSON (raw, or base64 of JSON) `{"run_id", "tenant", "flow", "inputs", "trigger"}`, and the trace context
of the request that queued it (`traceparent`, `tracestate`), continued here when telemetry is configured.

Delivery is at least once, so a message may arrive many times, even at the same moment on two workers:
- The run is recorded `queued` if new, and only the one caller that moves it `queued → running` executes it.
  A copy that finds the run finished (`succeeded`/`failed`/`rejected`) returns at once: no second model call,
  no second usage record.
- A copy that finds the run `running` cannot tell a live run from one whose worker died (a crashed host's
  message comes back after its 10-minute lease). So it raises RunInProgress and the host retries it after
  host.json `visibilityTimeout`; once the run has been `running` for longer than RUN_TIMEOUT (host.json
  `functionTimeout`, after which no invocation can still be alive), the copy marks it `failed`
  ("interrupted") with the usage already in the ledger. It is not re-executed: that could call the model
  (and bill the tenant's resource) twice. On the last attempt a copy that still sees a live run returns, so a
  duplicate of a long run never lands in the poison queue.
- A malformed message (bad JSON/base64, missing fields, unknown tenant or flow, invalid inputs) makes no model
  call. Where the tenant is known it is recorded as a `rejected` run with the reason (once, whatever the number
  of attempts). Then MessageRejected is raised, every time: the host retries it up to maxDequeueCount (5,
  host.json) — cheap, no model call — and then moves it to `flow-runs-poison`, where an operator finds the
  original message next to the reason in the run history. It is never retried forever, and never silently
  dropped. `dequeue_count` marks the last attempt in the log.
- Any other error (store unreachable, …) propagates, so the host retries the message; a run that had been
  claimed is picked up as described above.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import dataclass
from typing import Any

from shared.engine.errors import FlowError, InputError
from shared.services.catalog import FlowNotFound
from shared.services.runs import RUN_TIMEOUT, RunRefused, RunService
from shared.storage.models import RunRecord
from shared.telemetry import continued_trace, telemetry_configured

log = logging.getLogger(__name__)
MAX_DEQUEUE_COUNT = 5  # host.json extensions.queues.maxDequeueCount
FINISHED = ("succeeded", "failed", "rejected")
TRIGGERS = ("queue", "http", "timer", "webhook", "cli")


class MessageRejected(Exception):
    """A message that can never run; raised so the host moves it to the poison queue."""


class RunInProgress(Exception):
    """Another delivery of this message is running the flow (or its worker died); raised so the host retries
    the message later, when the run has finished or can be declared interrupted."""


@dataclass
class QueueOutcome:
    status: str  # executed | duplicate | interrupted
    run: RunRecord | None = None


def decode(body: bytes | str) -> dict[str, Any]:
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError):
        try:
            value = json.loads(base64.b64decode(text, validate=True).decode("utf-8"))
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise MessageRejected("message is neither JSON nor base64-encoded JSON") from None
    if not isinstance(value, dict):
        raise MessageRejected("message must be a JSON object")
    return value


class QueueWorker:
    def __init__(self, runs: RunService) -> None:
        self.runs = runs

    async def process(self, body: bytes | str, dequeue_count: int = 1) -> QueueOutcome:
        final = dequeue_count >= MAX_DEQUEUE_COUNT
        try:
            message = decode(body)
        except MessageRejected as exc:
            log.error("flow-runs message rejected (attempt %s%s): %s", dequeue_count, ", final" if final else "", exc)
            raise
        if telemetry_configured() and isinstance(message.get("traceparent"), str):
            with continued_trace(message):
                return await self.process_message(message, dequeue_count)
        return await self.process_message(message, dequeue_count)

    async def process_message(self, message: dict[str, Any], dequeue_count: int) -> QueueOutcome:
        tenant, flow, run_id = message.get("tenant"), message.get("flow"), message.get("run_id")
        inputs = message.get("inputs", {})
        trigger: str = message["trigger"] if message.get("trigger") in TRIGGERS else "queue"
        problems = [name for name, value in (("tenant", tenant), ("flow", flow), ("run_id", run_id))
                    if not isinstance(value, str) or not value]
        if problems:
            reason = f"message is missing {', '.join(problems)}"
            if isinstance(tenant, str) and tenant and isinstance(run_id, str) and run_id:
                await self.reject(tenant, flow if isinstance(flow, str) else "", run_id, trigger, reason)
            raise MessageRejected(reason)
        assert isinstance(tenant, str) and isinstance(flow, str) and isinstance(run_id, str)  # checked above
        try:
            prepared = await self.runs.prepare(tenant, flow, inputs, trigger, run_id=run_id, status="queued")
        except RunRefused as exc:
            if exc.code != "tenant_not_found":
                await self.reject(tenant, flow, run_id, trigger, str(exc))
            log.error("flow-runs message %s rejected (attempt %s): %s", run_id, dequeue_count, exc)
            raise MessageRejected(str(exc)) from None
        except (FlowNotFound, FlowError, InputError) as exc:
            reason = f"invalid message: {exc}"
            await self.reject(tenant, flow, run_id, trigger, reason)
            raise MessageRejected(reason) from None
        run = prepared.run
        if run.status == "queued" and await self.runs.claim(tenant, run_id):
            flow_definition = prepared.flow or self.runs.catalog.get(run.flow_id)
            claimed = await self.runs.stores.runs.get(tenant, run_id) or run
            return QueueOutcome("executed", await self.runs.execute(claimed, flow_definition, prepared.tenant))
        if run.status == "queued":  # another copy won the claim just now
            run = await self.runs.stores.runs.get(tenant, run_id) or run
        if run.status in FINISHED:
            return QueueOutcome("duplicate", run)
        return await self.in_progress(run, dequeue_count)

    async def in_progress(self, run: RunRecord, dequeue_count: int) -> QueueOutcome:
        started = run.started_at or run.created_at
        if run.status == "running" and self.runs.now() - started > RUN_TIMEOUT:
            return QueueOutcome("interrupted", await self.runs.interrupt(run))
        if dequeue_count >= MAX_DEQUEUE_COUNT:
            log.warning("flow-runs message %s: run still %s on the last attempt; leaving it to its own delivery",
                        run.run_id, run.status)
            return QueueOutcome("duplicate", run)
        raise RunInProgress(f"run {run.run_id} is {run.status} (started {started.isoformat()}); retry later")

    async def reject(self, tenant: str, flow: str, run_id: str, trigger: str, reason: str) -> None:
        try:
            await self.runs.reject(tenant, flow, run_id, trigger, reason)
        except Exception:  # recording the rejection must not hide the reason
            log.exception("could not record rejected run %s", run_id)
