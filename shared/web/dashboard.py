"""Renders the usage dashboard from usage summaries: numbers, tables and a server-side SVG chart."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from functools import lru_cache
from html import escape
from typing import Any
from urllib.parse import urlencode


@lru_cache(maxsize=1)
def template() -> Any:
    from importlib import resources

    from jinja2 import Environment, select_autoescape

    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    return env.from_string((resources.files("shared.web") / "dashboard.html").read_text(encoding="utf-8"))


def days_between(start: date, end: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def svg_chart(by_day: list[dict[str, Any]], start: date, end: date, width: int = 960, height: int = 240) -> str:
    """Bars for tokens, a polyline for cost; every day of the period gets a slot (empty days too)."""
    values = {row["day"]: row for row in by_day}
    days = days_between(start, end)[-62:]
    tokens = [int(values.get(d.isoformat(), {}).get("total_tokens", 0)) for d in days]
    costs = [Decimal(values.get(d.isoformat(), {}).get("cost") or 0) for d in days]
    top_tokens, top_cost = max(tokens + [1]), max(costs + [Decimal("0.000001")])
    left, bottom, plot_h = 56, height - 28, height - 48
    slot = (width - left - 10) / max(len(days), 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {width} {height}" width="100%" '
             f'data-chart="usage-per-day" aria-label="tokens and cost per day">',
             f'<line x1="{left}" y1="{bottom}" x2="{width - 10}" y2="{bottom}" stroke="#c7cdd9"/>',
             f'<text x="{left - 6}" y="{bottom - plot_h + 4}" font-size="11" text-anchor="end" fill="#5b6478">'
             f'{top_tokens}</text>',
             f'<text x="{left - 6}" y="{bottom}" font-size="11" text-anchor="end" fill="#5b6478">0</text>']
    points = []
    for i, (day, count, cost) in enumerate(zip(days, tokens, costs, strict=True)):
        x = left + i * slot
        bar_h = plot_h * count / top_tokens
        parts.append(f'<rect x="{x + slot * 0.15:.1f}" y="{bottom - bar_h:.1f}" width="{slot * 0.7:.1f}" '
                     f'height="{bar_h:.1f}" fill="#3b6cf6" data-day="{day.isoformat()}" data-tokens="{count}">'
                     f'<title>{day.isoformat()}: {count} tokens, ${escape(str(cost))}</title></rect>')
        points.append(f"{x + slot / 2:.1f},{bottom - float(plot_h * cost / top_cost):.1f}")
        if len(days) <= 16 or i % max(len(days) // 8, 1) == 0:
            parts.append(f'<text x="{x + slot / 2:.1f}" y="{height - 10}" font-size="10" text-anchor="middle" '
                         f'fill="#5b6478">{day.strftime("%m-%d")}</text>')
    parts.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="#e08a00" stroke-width="2"/>')
    parts.append("</svg>")
    return "".join(parts)


def share(used: Any, limit: Any) -> float:
    if limit in (None, 0, "0"):
        return 0.0
    return min(round(float(Decimal(str(used or 0)) * 100 / Decimal(str(limit))), 1), 100.0)


def render_dashboard(*, title: str, start: date, end: date, totals: dict[str, Any], by_day: list[dict[str, Any]],
                     tables: list[tuple[str, list[dict[str, Any]]]], budget: dict[str, Any] | None,
                     export_query: dict[str, str], export_path: str) -> str:
    if budget is not None:
        budget = {**budget, "token_share": share(budget["used_tokens"], budget["monthly_tokens"]),
                  "cost_share": share(budget["used_cost"], budget["monthly_cost"])}
    exports = [{"label": f"{fmt.upper()} by {key}",
                "href": f"{export_path}?{urlencode({**export_query, 'group_by': key, 'format': fmt})}"}
               for key, _ in tables for fmt in ("csv", "json")]
    return template().render(
        title=title, period_label=f"{start.isoformat()} to {end.isoformat()} (UTC)", totals=totals,
        chart=svg_chart(by_day, start, end), tables=[{"key": k, "rows": rows} for k, rows in tables],
        budget=budget, exports=exports)
