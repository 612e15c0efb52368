"""The dashboard renderer, pure: money in the price file's currency, totals, escaping, the GET range form, the
operator's picker and ranking, run drill-down, exports carrying the range, and the two-panel chart."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal
from html.parser import HTMLParser

import pytest

from shared.web.dashboard import (
    BudgetView,
    DashboardView,
    DayUsage,
    RunView,
    StepView,
    TenantChoice,
    UsageLine,
    export_links,
    fill_days,
    format_money,
    nice_ceiling,
    render_dashboard,
)

EVIL = '<script>alert("x")</script>'


@pytest.mark.parametrize(("amount", "currency", "shown"), [
    (Decimal("1234.567"), "USD", "$1,234.57"),
    (Decimal("0.00008475"), "USD", "$0.000085"),
    (Decimal("0.0049"), "EUR", "€0.0049"),
    (Decimal("0.42"), "EUR", "€0.42"),
    (Decimal("3.1"), "CHF", "CHF 3.10"),
    (Decimal("1234.5"), "JPY", "¥1,235"),
    (Decimal("0"), "USD", "$0.00"),
    (Decimal("-2.5"), "GBP", "-£2.50"),
    (None, "USD", "—"),
])
def test_money_in_the_currency(amount, currency, shown):
    assert format_money(amount, currency) == shown


def test_nice_axis_maxima():
    assert [nice_ceiling(Decimal(v)) for v in ("0", "7", "13", "180", "0.00031")] == [
        Decimal(1), Decimal(10), Decimal(20), Decimal(200), Decimal("0.0005")]


def sample_view(**changes) -> DashboardView:
    start, end = date(2026, 11, 1), date(2026, 11, 7)
    days = fill_days(start, end, [DayUsage(date(2026, 11, 2), 100, 20, 120, Decimal("0.0012"), 2),
                                  DayUsage(date(2026, 11, 5), 300, 80, 380, Decimal("0.0345"), 3)])
    run = RunView("a" * 32, f"flow {EVIL}", "failed", "contoso", "http", datetime(2026, 11, 5, 9, 30, tzinfo=UTC),
                  12.5, 380, Decimal("0.0345"), f"step draft: {EVIL}",
                  (StepView("creds", "load_credential", "succeeded", 1.2),
                   StepView("draft", "chat_completion", "failed", 10.1, 380, "model said no")),
                  href="/api/dashboard?run=" + "a" * 32)
    fields = dict(
        title=f"Usage of {EVIL}", start=start, end=end, today=date(2026, 11, 7), currency="EUR",
        totals=UsageLine("total", 400, 100, 500, Decimal("0.0357"), 5), days=days,
        by_key=(UsageLine("3f9c0a1b2d4e", 400, 100, 500, Decimal("0.0357"), 5),),
        by_flow=(UsageLine(f"flow {EVIL}", 400, 100, 500, Decimal("0.0357"), 5),),
        by_model=(UsageLine("gpt-4o-mini", 400, 100, 500, Decimal("0.0357"), 5),),
        budget=BudgetView("2026-11", "2026-12-01T00:00:00Z", 10000, Decimal("1.00"), 500, Decimal("0.0357")),
        recent_runs=(run,), exports=export_links("/api/usage", start, end, ("day", "model")),
    )
    return DashboardView(**{**fields, **changes})


class Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))
        self.scripts += tag == "script"


def parse(html: str) -> Collect:
    parser = Collect()
    parser.feed(html)
    return parser


def attr_values(html: str, selector_attr: str) -> list[str]:
    return [a[selector_attr] or "" for _, a in parse(html).elements if selector_attr in a]


def test_everything_user_supplied_is_escaped():
    html = render_dashboard(sample_view())
    assert EVIL not in html and parse(html).scripts == 0
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html


def test_totals_per_day_and_currency():
    html = render_dashboard(sample_view())
    metric = {a["data-metric"]: a.get("data-value") for _, a in parse(html).elements if "data-metric" in a}
    assert metric["cost"] == "0.0357" and metric["total_tokens"] == "500" and metric["runs"] == "5"
    assert 'data-metric="cost" data-value="0.0357">€0.04<' in html
    day_rows = re.findall(r'<tr data-group="(2026-11-\d\d)">', html)
    assert day_rows == ["2026-11-02", "2026-11-05"]  # the table lists the days with usage
    tokens = [int(v) for v in attr_values(html, "data-tokens")]
    costs = [Decimal(v) for v in attr_values(html, "data-cost")]
    assert len(tokens) == len(costs) == 7 and sum(tokens) == 500 and sum(costs) == Decimal("0.0357")
    assert "Cost (EUR)" in html and "amounts in EUR" in html and "$" not in html
    assert "€0.0012" in html and "€1.00" in html  # money everywhere in the currency, budget too


def test_range_form_works_without_javascript_and_exports_carry_the_range():
    html = render_dashboard(sample_view())
    form = next(a for tag, a in parse(html).elements if tag == "form")
    assert form["method"] == "get" and form["action"] == "/api/dashboard"
    inputs = {a["name"]: a["value"] for tag, a in parse(html).elements if tag == "input"}
    assert inputs == {"from": "2026-11-01", "to": "2026-11-07"}
    exports = [a["href"] for _, a in parse(html).elements if "data-export" in a]
    assert len(exports) == 4 and all("from=2026-11-01&to=2026-11-07" in e for e in exports)
    assert "/api/usage?from=2026-11-01&amp;to=2026-11-07&amp;group_by=model&amp;format=csv" in html
    assert "?from=2026-10-01&amp;to=2026-10-31" in html  # the "Last month" preset
    assert 'data-picker="tenant"' not in html and 'data-section="tenants"' not in html  # tenants see no picker


def test_runs_drill_down_to_steps():
    view = sample_view()
    html = render_dashboard(view)
    assert html.count("<details>") == 1 and 'data-step="draft"' in html and "model said no" in html
    assert f'href="/api/dashboard?run={"a" * 32}"' in html and 'class="status failed"' in html
    detail = render_dashboard(sample_view(selected_run=view.recent_runs[0]))
    assert 'id="run"' in detail and detail.count('data-step="draft"') == 2


def test_operator_picker_and_ranking():
    view = sample_view(operator=True, tenants=(TenantChoice("contoso", "Contoso"), TenantChoice("fabrikam", EVIL)),
                       tenants_by_cost=(UsageLine("fabrikam", cost=Decimal("2"), href="/api/dashboard?tenant=fabrikam"),
                                        UsageLine("contoso", cost=Decimal("1"))))
    html = render_dashboard(view)
    options = [a["value"] for tag, a in parse(html).elements if tag == "option"]
    assert options == ["", "contoso", "fabrikam"] and EVIL not in html
    assert re.findall(r'data-table="tenant".*?data-group="(\w+)".*?data-group="(\w+)"', html, re.S) == [
        ("fabrikam", "contoso")]
    picked = render_dashboard(sample_view(operator=True, tenant="contoso", tenants=view.tenants))
    assert '<option value="contoso" selected>' in picked and 'data-section="tenants"' not in picked
    assert "tenant=contoso&amp;from=" in picked  # presets keep the tenant picked


def test_the_price_file_names_the_currency(tmp_path):
    from shared.services.prices import PriceBook, PriceFileError
    from shared.settings import Settings

    assert PriceBook.load(Settings.from_env({}).prices_file).currency == "USD"
    (tmp_path / "eur.yaml").write_text("currency: EUR\nmodels: {}\n")
    assert PriceBook.load(tmp_path / "eur.yaml").currency == "EUR"
    (tmp_path / "none.yaml").write_text("models: {}\n")
    assert PriceBook.load(tmp_path / "none.yaml").currency == "USD"
    (tmp_path / "bad.yaml").write_text("currency: euro\nmodels: {}\n")
    with pytest.raises(PriceFileError, match="bad.yaml: currency: must be a 3-letter ISO 4217 code"):
        PriceBook.load(tmp_path / "bad.yaml")


def test_a_stored_run_becomes_a_run_view():
    from shared.storage.models import RunRecord, StepRecord
    from shared.web.dashboard import run_view

    started = datetime(2026, 11, 5, 9, 30, tzinfo=UTC)
    step = StepRecord("classify", "chat_completion", "failed", 12.5, {"total_tokens": 40}, "boom", 2)
    record = RunRecord("r1", "contoso", "triage-batch", "h", "queue", "failed", error="step classify: boom",
                       steps=[step], usage={"total_tokens": 40, "cost": "0.000012"}, started_at=started,
                       finished_at=started.replace(second=2))
    view = run_view(record, href="/api/dashboard?run=r1")
    assert (view.run_id, view.flow, view.status, view.tenant, view.total_tokens) == (
        "r1", "triage-batch", "failed", "contoso", 40)
    assert view.cost == Decimal("0.000012") and view.duration_ms == 2000.0
    assert view.steps == (StepView("classify", "chat_completion", "failed", 12.5, 40, "boom", 2),)
    html = render_dashboard(sample_view(recent_runs=(view,)))
    assert 'data-step="classify"' in html and "classify [2]" in html and "$" not in html
