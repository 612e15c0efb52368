"""Queue trigger `flow-runs`: one run per message, idempotent on the run id (see shared.services.queue_worker)."""

from __future__ import annotations

import azure.functions as func

from shared.functions.runtime import services

bp = func.Blueprint()


@bp.queue_trigger(arg_name="msg", queue_name="flow-runs", connection="AzureWebJobsStorage")
async def flow_runs(msg: func.QueueMessage) -> None:
    svc = await services()
    await svc.queue_worker.process(msg.get_body(), getattr(msg, "dequeue_count", None) or 1)
