"""Timer trigger `schedules`: every minute, enqueue the tenants' due schedules (see shared.services.schedules)."""

from __future__ import annotations

import logging
import re
from datetime import datetime

import azure.functions as func

from shared.functions.runtime import services

bp = func.Blueprint()
log = logging.getLogger(__name__)


def last_firing(timer: func.TimerRequest) -> datetime | None:
    """When the host last ran this timer (schedule_status.Last), so missed minutes can be caught up."""
    text = (getattr(timer, "schedule_status", None) or {}).get("Last")
    if not isinstance(text, str) or not text:
        return None
    try:  # the host writes 7 fractional digits (.NET ticks); Python reads at most 6
        return datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", text))
    except ValueError:
        return None


@bp.timer_trigger(arg_name="timer", schedule="0 * * * * *", run_on_startup=False, use_monitor=True)
async def schedules(timer: func.TimerRequest) -> None:
    svc = await services()
    enqueued = await svc.schedules.fire(last=last_firing(timer))
    interrupted = await svc.runs.sweep_interrupted()
    resent, undelivered = await svc.runs.sweep_queued()
    log.info("schedules: %d runs enqueued, %d stale runs marked interrupted, %d queued runs re-sent, %d failed "
             "undelivered%s", len(enqueued), len(interrupted), len(resent), len(undelivered),
             " (past due)" if timer.past_due else "")
