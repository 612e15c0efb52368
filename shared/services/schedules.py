"""Per-tenant schedules: cron expressions checked on write; the timer finds what is due each minute and enqueues
it with a run id derived from (schedule id, scheduled minute), so a double firing makes one run."""

from __future__ import annotations

import builtins
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.clock import Clock, SystemClock
from shared.services.catalog import FlowCatalog
from shared.services.cron import CronError, cron_schedule
from shared.services.run_queue import RunQueue
from shared.services.runs import RunService
from shared.storage.models import Schedule
from shared.storage.ports import ScheduleStore

log = logging.getLogger(__name__)
CATCH_UP = timedelta(minutes=10)  # a late timer enqueues the minutes it missed, at most this far back
RUN_NAMESPACE = uuid.UUID("6b1d0c3e-3f0a-4c47-9d55-7a1f0e0f5c11")


class ScheduleError(Exception):
    pass


def scheduled_run_id(schedule_id: str, minute: datetime) -> str:
    return uuid.uuid5(RUN_NAMESPACE, f"{schedule_id}|{minute.strftime('%Y-%m-%dT%H:%M')}").hex


def is_due(cron: str, minute: datetime) -> bool:
    return cron_schedule(cron).matches(minute)


class ScheduleService:
    def __init__(self, store: ScheduleStore, catalog: FlowCatalog, runs: RunService, queue: RunQueue,
                 clock: Clock | None = None) -> None:
        self.store = store
        self.catalog = catalog
        self.runs = runs
        self.queue = queue
        self.clock = clock or SystemClock()

    async def add(self, tenant_id: str, flow_ref: str, cron: str, inputs: dict[str, Any]) -> Schedule:
        try:
            cron_schedule(cron)
        except CronError as exc:
            raise ScheduleError(f"--cron {cron!r}: {exc}") from None
        await self.runs.active_tenant(tenant_id)
        flow = self.catalog.get(flow_ref)
        from shared.engine.inputs import coerce_inputs

        coerce_inputs(flow, inputs, from_strings=True)  # refuse a schedule whose inputs can never run
        schedule = Schedule(uuid.uuid4().hex[:12], tenant_id, flow.id, cron, inputs)
        await self.store.add(schedule)
        return schedule

    async def list(self, tenant_id: str | None = None) -> builtins.list[Schedule]:
        return await self.store.list(tenant_id)

    async def remove(self, schedule_id: str) -> bool:
        return await self.store.remove(schedule_id)

    async def due(self, now: datetime) -> builtins.list[Schedule]:
        """The enabled schedules whose cron matches the minute of `now` (UTC)."""
        minute = now.astimezone(UTC).replace(second=0, microsecond=0)
        return [s for s in await self.store.list() if s.enabled and is_due(s.cron, minute)]

    async def fire(self, now: datetime | None = None, last: datetime | None = None) -> builtins.list[str]:
        """Enqueues every schedule due this minute — and, when the previous firing (`last`) was missed, the
        minutes since it, up to CATCH_UP; returns the ids of the runs sent to the queue. A second firing for the
        same minute re-sends the runs still `queued` (the worker dedupes them), and no more."""
        minute = (now or self.clock.now()).astimezone(UTC).replace(second=0, microsecond=0)
        first = minute
        if last is not None:
            last = last if last.tzinfo else last.replace(tzinfo=UTC)
            first = min(max(last.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1),
                            minute - CATCH_UP), minute)
        enqueued: list[str] = []
        while first <= minute:
            enqueued += await self.fire_minute(first)
            first += timedelta(minutes=1)
        return enqueued

    async def fire_minute(self, minute: datetime) -> builtins.list[str]:
        enqueued = []
        for schedule in await self.due(minute):
            run_id = scheduled_run_id(schedule.id, minute)
            try:
                prepared = await self.runs.prepare(schedule.tenant_id, schedule.flow_id, schedule.inputs, "timer",
                                                   run_id=run_id, status="queued", from_strings=True)
            except Exception as exc:  # one broken schedule must not stop the others
                log.error("schedule %s (tenant %s) not enqueued: %s", schedule.id, schedule.tenant_id, exc)
                continue
            if prepared.run.status == "queued":  # new, or enqueued before a crash: the worker dedupes copies
                await self.queue.send({"run_id": run_id, "tenant": schedule.tenant_id, "flow": schedule.flow_id,
                                       "inputs": prepared.run.inputs, "trigger": "timer"})
                enqueued.append(run_id)
        return enqueued
