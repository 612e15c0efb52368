"""Queue trigger: one run per message, idempotent on the run id (see shared.services.queue_worker). The queue's
name is the app setting TENANTFLOW_RUN_QUEUE (default flow-runs), the one the sender uses too."""

from __future__ import annotations

import azure.functions as func

from shared.functions.runtime import services

bp = func.Blueprint()


@bp.queue_trigger(arg_name="msg", queue_name="%TENANTFLOW_RUN_QUEUE%", connection="AzureWebJobsStorage")
async def flow_runs(msg: func.QueueMessage) -> None:
    svc = await services()  # a store that cannot be opened raises: the host redelivers the message later
    await svc.queue_worker.process(msg.get_body(), getattr(msg, "dequeue_count", None) or 1)
