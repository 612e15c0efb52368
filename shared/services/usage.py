"""Usage read side: summaries for the CLI, the usage API and the dashboard, budgets status. Reads go through
the UsageQueries read model, never the write path."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from shared.services.metering import period_reset
from shared.storage.models import Budget, UsageRow, period_of
from shared.storage.ports import GROUP_KEYS, BudgetStore, UsageQueries

NUMBER_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens", "cost", "runs")


class UsageQueryError(ValueError):
    """A bad filter: the message names the field (`from`, `to`, `group_by`, `monthly_tokens`, …)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def parse_day(field: str, text: str | None) -> date | None:
    if text is None or text == "":
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise UsageQueryError(field, f"must be a date YYYY-MM-DD, got {text!r}") from None


def money(value: Decimal | None) -> str | None:
    """A cost as a decimal string (no binary floats, no exponent)."""
    if value is None:
        return None
    return format(value.normalize(), "f") if value != 0 else "0"


@dataclass(frozen=True)
class UsageQuery:
    tenant_id: str | None
    start: date | None
    end: date | None
    group_by: str

    @classmethod
    def parse(cls, tenant_id: str | None, start: str | None, end: str | None, group_by: str | None,
              allowed: tuple[str, ...] = GROUP_KEYS) -> UsageQuery:
        group = group_by or "day"
        if group not in allowed:
            raise UsageQueryError("group_by", f"must be one of {', '.join(allowed)}, got {group!r}")
        first, last = parse_day("from", start), parse_day("to", end)
        if first and last and first > last:
            raise UsageQueryError("from", f"{first} is after to={last}")
        return cls(tenant_id, first, last, group)


class UsageService:
    def __init__(self, queries: UsageQueries, budgets: BudgetStore) -> None:
        self.queries = queries
        self.budgets = budgets

    async def summary(self, query: UsageQuery) -> dict[str, Any]:
        """{totals: {prompt_tokens, completion_tokens, total_tokens, cost, runs}, rows: [{<group>: …, …}]}"""
        rows = await self.queries.summarize(query.tenant_id, query.start, query.end, query.group_by)
        per_tenant = rows if query.group_by == "tenant" else await self.queries.summarize(
            query.tenant_id, query.start, query.end, "tenant")
        return {
            "tenant": query.tenant_id,
            "from": query.start.isoformat() if query.start else None,
            "to": query.end.isoformat() if query.end else None,
            "group_by": query.group_by,
            "totals": totals(per_tenant),
            "rows": [{query.group_by: row.group, **numbers(row)} for row in rows],
        }

    async def budget_status(self, tenant_id: str, now: datetime | None = None) -> dict[str, Any]:
        period = period_of(now or datetime.now(UTC))
        budget = await self.budgets.get_budget(tenant_id) or Budget(tenant_id)
        counters = await self.budgets.counters(tenant_id, period)
        return {
            "tenant": tenant_id,
            "period": period,
            "reset": period_reset(period).isoformat().replace("+00:00", "Z"),
            "monthly_tokens": budget.monthly_tokens,
            "monthly_cost": money(budget.monthly_cost),
            "used_tokens": counters.used_tokens,
            "reserved_tokens": counters.reserved_tokens,
            "used_cost": money(counters.used_cost),
            "reserved_cost": money(counters.reserved_cost),
        }

    async def set_budget(self, tenant_id: str, monthly_tokens: int | None, monthly_cost: str | None) -> Budget:
        """Replaces the tenant's limits (a limit not given is none); at least one must be given."""
        if monthly_tokens is None and monthly_cost is None:
            raise UsageQueryError("monthly_tokens", "give monthly_tokens (--monthly-tokens) and/or monthly_cost "
                                  "(--monthly-cost)")
        if isinstance(monthly_tokens, bool) or (monthly_tokens is not None and not isinstance(monthly_tokens, int)):
            raise UsageQueryError("monthly_tokens", "must be a whole number")
        if monthly_tokens is not None and monthly_tokens < 0:
            raise UsageQueryError("monthly_tokens", "must be 0 or more")
        cost = None
        if monthly_cost is not None:
            try:
                cost = Decimal(monthly_cost)
            except ArithmeticError:
                raise UsageQueryError("monthly_cost", f"must be a decimal number, got {monthly_cost!r}") from None
            if not cost.is_finite() or cost < 0:
                raise UsageQueryError("monthly_cost", "must be a finite number, 0 or more")
        budget = Budget(tenant_id, monthly_tokens, cost)
        await self.budgets.set_budget(budget)
        return budget


def numbers(row: UsageRow) -> dict[str, Any]:
    return {"prompt_tokens": row.prompt_tokens, "completion_tokens": row.completion_tokens,
            "total_tokens": row.total_tokens, "cost": money(row.cost), "runs": row.runs}


def totals(per_tenant: list[UsageRow]) -> dict[str, Any]:
    """Runs are distinct per tenant, so the per-tenant rows add up to distinct runs overall."""
    costs = [r.cost for r in per_tenant if r.cost is not None]
    return {
        "prompt_tokens": sum(r.prompt_tokens for r in per_tenant),
        "completion_tokens": sum(r.completion_tokens for r in per_tenant),
        "total_tokens": sum(r.total_tokens for r in per_tenant),
        "cost": money(sum(costs, Decimal(0))) if costs else (None if per_tenant else "0"),
        "runs": sum(r.runs for r in per_tenant),
    }


FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\n")


def csv_cell(value: Any) -> str:
    """A cell a spreadsheet will not run as a formula (OWASP CSV injection): text starting with = + - @ tab or CR
    gets a leading single quote. Model names and flow ids come from tenants, so every cell goes through here. A CR or
    LF inside a cell becomes a space (the csv module does not quote a lone CR, which would split the row)."""
    text = "" if value is None else str(value)
    text = "'" + text if text.startswith(FORMULA_PREFIXES) else text
    return text.replace("\r", " ").replace("\n", " ")


def to_csv(summary: dict[str, Any]) -> str:
    """The CSV of a usage summary: the tenant's and the operator's HTTP exports and the CLI all write this."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    key = summary["group_by"]
    writer.writerow([csv_cell(key), *NUMBER_FIELDS])
    for row in summary["rows"]:
        writer.writerow([csv_cell(row[key]), *(csv_cell(row[f]) for f in NUMBER_FIELDS)])
    writer.writerow(["total", *(csv_cell(summary["totals"][f]) for f in NUMBER_FIELDS)])
    return out.getvalue()
