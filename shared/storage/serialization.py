"""How records become JSON documents and text columns — one place, shared by every adapter."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from shared.storage.models import RunRecord, StepRecord, UsageRow


def time_text(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with microseconds: sorts as text."""
    if moment is None:
        return None
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def parse_required_time(text: str) -> datetime:
    moment = parse_time(text)
    if moment is None:
        raise ValueError("a required time is missing")
    return moment


def decimal_or_none(text: Any) -> Decimal | None:
    return None if text is None or text == "" else Decimal(str(text))


def run_to_document(run: RunRecord) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "tenant_id": run.tenant_id,
        "flow_id": run.flow_id,
        "flow_hash": run.flow_hash,
        "trigger": run.trigger,
        "status": run.status,
        "inputs": run.inputs,
        "outputs": run.outputs,
        "error": run.error,
        "steps": [
            {"id": s.id, "kind": s.kind, "status": s.status, "duration_ms": s.duration_ms, "usage": s.usage,
             "error": s.error, "iteration": s.iteration}
            for s in run.steps
        ],
        "usage": run.usage,
        "idempotency_key": run.idempotency_key,
        "request_hash": run.request_hash,
        "created_at": time_text(run.created_at),
        "started_at": time_text(run.started_at),
        "finished_at": time_text(run.finished_at),
    }


def run_from_document(doc: dict[str, Any]) -> RunRecord:
    return RunRecord(
        run_id=doc["run_id"],
        tenant_id=doc["tenant_id"],
        flow_id=doc["flow_id"],
        flow_hash=doc.get("flow_hash") or "",
        trigger=doc["trigger"],
        status=doc["status"],
        inputs=doc.get("inputs") or {},
        outputs=doc.get("outputs"),
        error=doc.get("error"),
        steps=[StepRecord(**s) for s in doc.get("steps") or []],
        usage=doc.get("usage") or {},
        idempotency_key=doc.get("idempotency_key"),
        request_hash=doc.get("request_hash"),
        created_at=parse_time(doc.get("created_at")) or datetime.now(UTC),
        started_at=parse_time(doc.get("started_at")),
        finished_at=parse_time(doc.get("finished_at")),
    )


def stale_runs(runs: Any, started_before: datetime, limit: int) -> list[RunRecord]:
    """Runs that started before `started_before`, oldest first, at most `limit`."""
    stale = [r for r in runs if (r.started_at or r.created_at) < started_before]
    return sorted(stale, key=lambda r: r.started_at or r.created_at)[:limit]


def aggregate_usage(items: Any) -> list[UsageRow]:
    """(group, prompt, completion, total, cost text|None, run key) → one UsageRow per group, ordered by group."""
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    costs: dict[str, Decimal | None] = {}
    runs: dict[str, set[Any]] = defaultdict(set)
    for group, prompt, completion, total, cost, run in items:
        totals = sums[group]
        totals[0] += prompt
        totals[1] += completion
        totals[2] += total
        runs[group].add(run)
        if cost is not None and cost != "":
            costs[group] = (costs.get(group) or Decimal(0)) + Decimal(str(cost))
        else:
            costs.setdefault(group, None)
    return [UsageRow(g, sums[g][0], sums[g][1], sums[g][2], costs.get(g), len(runs[g])) for g in sorted(sums)]
