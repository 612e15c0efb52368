"""Timer trigger `schedules`: every minute, enqueue the tenants' due schedules (see shared.services.schedules)."""

from __future__ import annotations

import logging

import azure.functions as func

from shared.functions.runtime import services

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.timer_trigger(arg_name="timer", schedule="0 * * * * *", run_on_startup=False, use_monitor=True)
async def schedules(timer: func.TimerRequest) -> None:
    svc = await services()
    enqueued = await svc.schedules.fire()
    interrupted = await svc.runs.sweep_interrupted()
    log.info("schedules: %d runs enqueued, %d stale runs marked interrupted%s", len(enqueued), len(interrupted),
             " (past due)" if timer.past_due else "")
