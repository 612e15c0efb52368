"""The usage dashboard, server-rendered: a view model (plain frozen dataclasses, filled by the HTTP layer from the
usage read model, budgets and runs) and a pure `render_dashboard(view) -> str`. No JavaScript: the date range and
the tenant picker are a GET form, run steps open with <details>, the chart is inline SVG."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from html import escape
from typing import Any
from urllib.parse import urlencode

from shared.storage.models import RunRecord

CURRENCY_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "CNY": "¥", "INR": "₹", "KRW": "₩"}
ZERO_DECIMAL_CURRENCIES = frozenset({"JPY", "KRW"})


# --- the view model ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class UsageLine:
    """One row of a breakdown (or the totals): what `label` used in the period."""

    label: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost: Decimal | None = None  # None: a model without a price
    runs: int = 0
    href: str | None = None  # e.g. the tenant's own dashboard, in the operator's ranking


@dataclass(frozen=True)
class DayUsage:
    day: date
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost: Decimal | None = None
    runs: int = 0


@dataclass(frozen=True)
class StepView:
    id: str
    kind: str
    status: str
    duration_ms: float | None = None
    total_tokens: int | None = None
    error: str | None = None
    iteration: int = 0


@dataclass(frozen=True)
class RunView:
    run_id: str
    flow: str
    status: str  # queued | running | succeeded | failed | rejected | interrupted
    tenant: str = ""
    trigger: str = ""
    started_at: datetime | None = None
    duration_ms: float | None = None
    total_tokens: int = 0
    cost: Decimal | None = None
    error: str | None = None
    steps: tuple[StepView, ...] = ()
    href: str | None = None  # the run's detail view (this page with ?run=…)


@dataclass(frozen=True)
class BudgetView:
    period: str
    reset: str
    monthly_tokens: int | None
    monthly_cost: Decimal | None
    used_tokens: int
    used_cost: Decimal | None


@dataclass(frozen=True)
class TenantChoice:
    id: str
    name: str


@dataclass(frozen=True)
class ExportLink:
    label: str
    href: str


@dataclass(frozen=True)
class DashboardView:
    title: str
    start: date
    end: date
    today: date
    currency: str = "USD"  # the price file's
    operator: bool = False
    tenant: str | None = None  # the tenant shown; None: all tenants (operator)
    totals: UsageLine = field(default_factory=lambda: UsageLine("total"))
    days: tuple[DayUsage, ...] = ()  # every day of the period, empty days too (see fill_days)
    by_key: tuple[UsageLine, ...] = ()
    by_flow: tuple[UsageLine, ...] = ()
    by_model: tuple[UsageLine, ...] = ()
    budget: BudgetView | None = None
    tenants: tuple[TenantChoice, ...] = ()  # operator: the tenant picker
    tenants_by_cost: tuple[UsageLine, ...] = ()  # operator: ranked, most expensive first
    recent_runs: tuple[RunView, ...] = ()
    selected_run: RunView | None = None  # the drill-down, when the page was asked for one run
    exports: tuple[ExportLink, ...] = ()
    page_path: str = "/api/dashboard"  # where the date-range form sends its GET


def run_view(run: RunRecord, href: str | None = None) -> RunView:
    """A stored run as the page shows it (recent runs and the drill-down)."""
    usage = run.usage or {}
    duration = ((run.finished_at - run.started_at).total_seconds() * 1000
                if run.started_at and run.finished_at else None)
    return RunView(
        run.run_id, run.flow_id, run.status, run.tenant_id, run.trigger, run.started_at or run.created_at, duration,
        int(usage.get("total_tokens") or 0), decimal_or_none(usage.get("cost")), run.error,
        tuple(StepView(s.id, s.kind, s.status, s.duration_ms, (s.usage or {}).get("total_tokens"), s.error,
                       s.iteration or 0) for s in run.steps),
        href)


def fill_days(start: date, end: date, rows: list[DayUsage]) -> tuple[DayUsage, ...]:
    """Every day from start to end, with the rows' numbers where there are any."""
    by_day = {row.day: row for row in rows}
    return tuple(by_day.get(start + timedelta(days=i), DayUsage(start + timedelta(days=i)))
                 for i in range((end - start).days + 1))


def export_links(path: str, start: date, end: date, groups: tuple[str, ...],
                 tenant: str | None = None) -> tuple[ExportLink, ...]:
    """CSV and JSON exports of the usage API, one per grouping, carrying the page's date range (and tenant)."""
    query = {"from": start.isoformat(), "to": end.isoformat(), **({"tenant": tenant} if tenant else {})}
    return tuple(ExportLink(f"{fmt.upper()} by {group}",
                            f"{path}?{urlencode({**query, 'group_by': group, 'format': fmt})}")
                 for group in groups for fmt in ("csv", "json"))


# --- formatting ----------------------------------------------------------------------------------------------------
def format_money(amount: Decimal | None, currency: str, trim: bool = False) -> str:
    """`$1,234.57`, `€0.42`, `$0.000085` (tiny amounts keep two significant digits), `CHF 3.10`; None → `—`.
    `trim` drops a tiny amount's trailing zero (`$0.00005`), for axis labels."""
    if amount is None:
        return "—"
    amount = Decimal(amount)
    symbol = CURRENCY_SYMBOLS.get(currency)
    sign = "-" if amount < 0 else ""
    amount = abs(amount)
    places = 0 if currency in ZERO_DECIMAL_CURRENCIES else 2
    if amount != 0 and amount < Decimal(1).scaleb(-places):
        places = max(-amount.adjusted() + 1, places)  # two significant digits
    text = f"{amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP):,.{places}f}"
    if trim and places > 2:
        text = text.rstrip("0")
    return f"{sign}{symbol}{text}" if symbol else f"{sign}{currency} {text}"


def format_tokens(count: int | None) -> str:
    return "—" if count is None else f"{count:,}"


def compact(count: float) -> str:
    """Axis labels: 950, 1.2k, 3.4M."""
    for factor, suffix in ((1_000_000_000, "B"), (1_000_000, "M"), (1_000, "k")):
        if count >= factor:
            return f"{count / factor:.1f}".rstrip("0").rstrip(".") + suffix
    return f"{count:g}"


def nice_ceiling(value: Decimal) -> Decimal:
    """The smallest 1, 2 or 5 × 10^n at or above value (an axis maximum people can read); 1 for nothing."""
    if value <= 0:
        return Decimal(1)
    exponent = value.adjusted()
    for step in (1, 2, 5, 10):
        candidate = Decimal(step).scaleb(exponent)
        if candidate >= value:
            return candidate
    return Decimal(10).scaleb(exponent)  # pragma: no cover - 10 × 10^n always covers value


# --- the chart -----------------------------------------------------------------------------------------------------
CHART_WIDTH, PANEL_HEIGHT, LEFT, RIGHT, TOP, GAP, BOTTOM = 480, 110, 78, 6, 22, 36, 24
TOKEN_COLOR, COST_COLOR, AXIS_COLOR, TEXT_COLOR = "#3b6cf6", "#d9480f", "#aab2c5", "#4a5468"


def svg_chart(days: tuple[DayUsage, ...], currency: str) -> str:
    """Two panels over the same days: tokens (blue bars, token axis) above, cost (orange bars, money axis) below."""
    token_max = nice_ceiling(Decimal(max((d.total_tokens for d in days), default=0)))
    cost_max = nice_ceiling(max((d.cost or Decimal(0) for d in days), default=Decimal(0)))
    plot_width = CHART_WIDTH - LEFT - RIGHT
    slot = plot_width / max(len(days), 1)
    token_top, cost_top = TOP, TOP + PANEL_HEIGHT + GAP
    height = cost_top + PANEL_HEIGHT + BOTTOM
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {CHART_WIDTH} {height}" '
             f'width="100%" data-chart="usage-per-day" font-size="13" fill="{TEXT_COLOR}" '
             f'aria-label="tokens and cost per day">']
    for top, title, maximum, label in (
            (token_top, "Tokens", token_max, lambda v: compact(float(v))),
            (cost_top, f"Cost ({currency})", cost_max, lambda v: format_money(v, currency, trim=True))):
        bottom = top + PANEL_HEIGHT
        parts.append(f'<text x="{LEFT}" y="{top - 8}" font-weight="600" data-axis-title="{escape(title)}">'
                     f'{escape(title)}</text>')
        for fraction in (Decimal(0), Decimal("0.5"), Decimal(1)):
            y = bottom - float(fraction) * PANEL_HEIGHT
            parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{CHART_WIDTH - RIGHT}" y2="{y:.1f}" '
                         f'stroke="{AXIS_COLOR}" stroke-width="{1 if fraction == 0 else 0.5}"/>')
            parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" data-tick>'
                         f'{escape(label(maximum * fraction))}</text>')
        parts.append(f'<line x1="{LEFT}" y1="{top}" x2="{LEFT}" y2="{bottom}" stroke="{AXIS_COLOR}"/>')
    label_every = max(len(days) // 8, 1)
    for i, day in enumerate(days):
        x = LEFT + i * slot + slot * 0.15
        width = max(slot * 0.7, 0.5)
        token_h = PANEL_HEIGHT * day.total_tokens / float(token_max)
        cost = day.cost or Decimal(0)
        cost_h = PANEL_HEIGHT * float(cost / cost_max)
        when = day.day.isoformat()
        parts.append(f'<rect x="{x:.1f}" y="{token_top + PANEL_HEIGHT - token_h:.1f}" width="{width:.1f}" '
                     f'height="{token_h:.1f}" fill="{TOKEN_COLOR}" data-day="{when}" data-tokens="{day.total_tokens}">'
                     f'<title>{when}: {format_tokens(day.total_tokens)} tokens</title></rect>')
        parts.append(f'<rect x="{x:.1f}" y="{cost_top + PANEL_HEIGHT - cost_h:.1f}" width="{width:.1f}" '
                     f'height="{cost_h:.1f}" fill="{COST_COLOR}" data-day="{when}" data-cost="{cost}">'
                     f'<title>{when}: {escape(format_money(day.cost, currency))}</title></rect>')
        if i % label_every == 0:
            parts.append(f'<text x="{LEFT + i * slot + slot / 2:.1f}" y="{height - 8}" text-anchor="middle">'
                         f'{day.day.strftime("%m-%d")}</text>')
    parts.append("</svg>")
    return "".join(parts)


# --- the page ------------------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def template() -> Any:
    from importlib import resources

    from jinja2 import Environment, select_autoescape

    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    env.filters["money"] = format_money
    env.filters["tokens"] = format_tokens
    return env.from_string((resources.files("shared.web") / "dashboard.html").read_text(encoding="utf-8"))


def share(used: Decimal | int | None, limit: Decimal | int | None) -> float:
    if not limit:
        return 0.0
    return min(round(float(Decimal(used or 0) * 100 / Decimal(limit)), 1), 100.0)


def presets(view: DashboardView) -> list[tuple[str, str]]:
    """(label, href) for the usual ranges, relative to today, keeping the tenant picked."""
    month_start = view.today.replace(day=1)
    last_month_end = month_start - timedelta(days=1)
    ranges = (("This month", month_start, view.today), ("Last month", last_month_end.replace(day=1), last_month_end),
              ("Last 7 days", view.today - timedelta(days=6), view.today),
              ("Last 30 days", view.today - timedelta(days=29), view.today))
    keep = {"tenant": view.tenant} if view.operator and view.tenant else {}
    return [(label, f"{view.page_path}?{urlencode({**keep, 'from': a.isoformat(), 'to': b.isoformat()})}")
            for label, a, b in ranges]


def render_dashboard(view: DashboardView) -> str:
    """The page for `view`."""
    budget = view.budget
    return template().render(
        view=view, chart=svg_chart(view.days, view.currency), presets=presets(view),
        day_rows=[d for d in view.days if d.total_tokens or d.runs or d.cost],
        breakdowns=[("key", "API key", view.by_key), ("flow", "flow", view.by_flow),
                    ("model", "model", view.by_model)],
        token_share=share(budget.used_tokens, budget.monthly_tokens) if budget else 0.0,
        cost_share=share(budget.used_cost, budget.monthly_cost) if budget else 0.0,
    )


# --- usage summaries (UsageService.summary rows) → view lines -------------------------------------------------------
def decimal_or_none(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def usage_line(label: str, row: dict[str, Any]) -> UsageLine:
    return UsageLine(str(label), int(row.get("prompt_tokens") or 0), int(row.get("completion_tokens") or 0),
                     int(row.get("total_tokens") or 0), decimal_or_none(row.get("cost")), int(row.get("runs") or 0))


def render_unauthorized(reason: str) -> str:
    """The HTML 401 page for a browser whose link is expired, tampered or missing (`reason` is shown escaped)."""
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><title>Tenantflow — sign-in needed</title>'
        '<style>body{font:16px/1.5 system-ui,sans-serif;margin:0;background:#f5f7fb;color:#1d2433}'
        'main{max-width:560px;margin:12vh auto;padding:24px;background:#fff;border-radius:10px;'
        'box-shadow:0 1px 3px rgba(0,0,0,.08)}h1{font-size:20px;margin:0 0 8px}</style></head>'
        f'<body><main data-page="unauthorized"><h1>This dashboard link does not work</h1><p>{escape(reason)}.</p>'
        '<p>Ask for a new link (<code>tenantflow dashboard-link TENANT</code>).</p></main></body></html>\n')
