"""The dashboard in a real headless Chromium (Debian's chromium driven by Playwright), opened as a person opens it:
from a signed link. The link becomes an HttpOnly, SameSite=Strict cookie and the address bar shows the clean URL; the
numbers shown equal the ledger's at 1280 and 390 px (no horizontal scroll on the phone); the exports and the run
drill-down work from the page; an operator link shows the tenant picker and the ranking."""

from __future__ import annotations

import csv
import io
import os
from datetime import timedelta
from decimal import Decimal

import pytest

from shared.functions.local_server import serving_in_this_loop
from shared.services.dashboard_access import dashboard_url, sign_dashboard_token
from shared.web.screenshot import CHROMIUM, CHROMIUM_ARGS
from tests.functions.test_usage_and_budgets import ledger_totals, seed

pytestmark = pytest.mark.browser
TOTALS = ("total_tokens", "cost", "prompt_tokens", "completion_tokens", "runs")


def require_chromium() -> None:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail("Debian chromium is missing (scripts/install-system-deps.sh installs it)")
        pytest.skip("Debian chromium is not installed")


async def shown_totals(page) -> dict[str, str | None]:
    return {name: await page.locator(f'[data-metric="{name}"]').get_attribute("data-value") for name in TOTALS}


async def test_a_signed_link_opens_the_dashboard_and_its_numbers_equal_the_ledger(app, tmp_path):
    require_chromium()
    from playwright.async_api import async_playwright

    keys, runs = await seed(app)
    records = [r for r in await ledger_totals(app, runs) if r.tenant_id == "contoso"]
    key = app.svc.settings.encryption_keys[0].key
    expires = app.svc.clock.now() + timedelta(hours=1)
    async with serving_in_this_loop() as base_url, async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        page = await context.new_page()
        link = dashboard_url(base_url, sign_dashboard_token(key, "contoso", False, expires))
        response = await page.goto(link)
        assert response.status == 200 and page.url == f"{base_url}/api/dashboard"  # the token is gone from the URL
        [cookie] = await context.cookies()
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and not cookie["secure"]
        wide = await shown_totals(page)
        bars = await page.locator('svg[data-chart="usage-per-day"] rect[data-tokens]').evaluate_all(
            "rects => rects.map(r => Number(r.dataset.tokens))")
        flows = await page.locator('table[data-table="flow"] tbody tr').count()
        key_rows = await page.locator('table[data-table="key"] tbody tr').evaluate_all(
            "rows => rows.map(r => r.dataset.group)")
        cost_text = (await page.locator('[data-metric="cost"]').inner_text()).strip()
        await page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        await page.set_viewport_size({"width": 390, "height": 844})
        await page.reload()
        narrow = await shown_totals(page)
        overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        await page.screenshot(path=str(tmp_path / "dashboard-390.png"), full_page=True)

        export = await page.locator("a[data-export]", has_text="CSV by day").get_attribute("href")
        exported = await page.request.get(f"{base_url}{export}")  # the page's cookie goes with it
        total_row = list(csv.reader(io.StringIO(await exported.text())))[-1]

        await page.set_viewport_size({"width": 1280, "height": 900})
        await page.locator('table[data-table="runs"] summary').first.click()
        await page.locator('table[data-table="runs"] details[open] a').first.click()
        await page.wait_for_selector('section[data-section="run"] table[data-table="steps"]')
        drilled_steps = await page.locator('section[data-section="run"] tr[data-step]').count()

        operator = await browser.new_page()
        await operator.goto(dashboard_url(base_url, sign_dashboard_token(key, None, True, expires)))
        options = await operator.locator('select[data-picker="tenant"] option').evaluate_all(
            "options => options.map(o => o.value)")
        ranked = await operator.locator('table[data-table="tenant"] tbody tr').evaluate_all(
            "rows => rows.map(r => r.dataset.group)")
        await browser.close()
    ledger = {"total_tokens": sum(r.total_tokens for r in records), "runs": len({r.run_id for r in records}),
              "prompt_tokens": sum(r.prompt_tokens for r in records),
              "completion_tokens": sum(r.completion_tokens for r in records)}
    for shown in (wide, narrow):
        assert {name: int(shown[name] or 0) for name in ledger} == ledger
        assert Decimal(shown["cost"] or "NaN") == sum((r.cost for r in records), Decimal(0))
    assert sum(bars) == ledger["total_tokens"] and flows == 2
    assert key_rows == [keys["contoso"].split("_")[1]]  # every contoso run was started with its one key
    assert cost_text.startswith("$")  # money in the price file's currency (USD)
    assert overflow <= 0  # no horizontal scroll at 390 px
    assert exported.status == 200 and total_row[0] == "total" and int(total_row[3]) == ledger["total_tokens"]
    assert drilled_steps >= 3
    assert options == ["", "contoso", "fabrikam"] and sorted(ranked) == ["contoso", "fabrikam"]
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000 and (tmp_path / "dashboard-390.png").exists()
