"""Processing one `flow-runs` message, idempotently on its run id.

Message: JSON (raw, or base64 of JSON) `{"run_id", "tenant", "flow", "inputs", "trigger"}`.
- A duplicate or redelivered message never runs or bills twice: the run is recorded `queued` if new, and only
  the one caller that moves it `queued → running` executes it; every other copy returns at once.
- A malformed message (bad JSON/base64, missing fields, unknown tenant or flow, invalid inputs) makes no model
  call. Where the tenant is known it is recorded as a `rejected` run with the reason. Then MessageRejected is
  raised, so the host retries it up to maxDequeueCount (5, host.json) and moves it to `flow-runs-poison` for
  an operator to look at, instead of retrying it forever. `dequeue_count` tells the last attempt, logged as such.
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
from shared.services.runs import RunRefused, RunService
from shared.storage.models import RunRecord

log = logging.getLogger(__name__)
MAX_DEQUEUE_COUNT = 5
TRIGGERS = ("queue", "http", "timer", "webhook", "cli")


class MessageRejected(Exception):
    """A message that can never run; raised so the host moves it to the poison queue."""


@dataclass
class QueueOutcome:
    status: str  # executed | duplicate | rejected
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
        tenant, flow, run_id = message.get("tenant"), message.get("flow"), message.get("run_id")
        inputs = message.get("inputs", {})
        trigger = message.get("trigger") if message.get("trigger") in TRIGGERS else "queue"
        problems = [name for name, value in (("tenant", tenant), ("flow", flow), ("run_id", run_id))
                    if not isinstance(value, str) or not value]
        if problems:
            reason = f"message is missing {', '.join(problems)}"
            if isinstance(tenant, str) and tenant and isinstance(run_id, str) and run_id:
                await self.reject(tenant, flow if isinstance(flow, str) else "", run_id, trigger, reason)
            raise MessageRejected(reason)
        assert isinstance(tenant, str) and isinstance(flow, str) and isinstance(run_id, str)
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
        if prepared.run.status != "queued" or not await self.runs.claim(tenant, run_id):
            return QueueOutcome("duplicate", prepared.run)  # done, running or rejected by another copy
        flow_definition = prepared.flow or self.runs.catalog.get(prepared.run.flow_id)
        run = await self.runs.stores.runs.get(tenant, run_id) or prepared.run
        return QueueOutcome("executed", await self.runs.execute(run, flow_definition, prepared.tenant))

    async def reject(self, tenant: str, flow: str, run_id: str, trigger: str, reason: str) -> None:
        try:
            await self.runs.reject(tenant, flow, run_id, trigger, reason)
        except Exception:  # recording the rejection must not hide the reason
            log.exception("could not record rejected run %s", run_id)
