"""The dashboard in a real headless Chromium (Debian's chromium driven by Playwright): the numbers a person
sees equal the ledger's."""

from __future__ import annotations

import os
from decimal import Decimal

import pytest

from shared.functions.local_server import serving_in_this_loop
from shared.web.screenshot import CHROMIUM, CHROMIUM_ARGS
from tests.functions.test_usage_and_budgets import ledger_totals, seed

pytestmark = pytest.mark.browser


def require_chromium() -> None:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail("Debian chromium is missing (scripts/install-system-deps.sh installs it)")
        pytest.skip("Debian chromium is not installed")


async def test_dashboard_numbers_in_the_browser_equal_the_ledger(app, tmp_path):
    require_chromium()
    from playwright.async_api import async_playwright

    keys, runs = await seed(app)
    records = [r for r in await ledger_totals(app, runs) if r.tenant_id == "contoso"]
    async with serving_in_this_loop() as base_url, async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = await browser.new_page(extra_http_headers={"x-api-key": keys["contoso"]})
        response = await page.goto(f"{base_url}/api/dashboard")
        assert response.status == 200
        shown = {name: await page.locator(f'[data-metric="{name}"]').get_attribute("data-value")
                 for name in ("total_tokens", "cost", "prompt_tokens", "completion_tokens", "runs")}
        cost_text = (await page.locator('[data-metric="cost"]').inner_text()).strip()
        bars = await page.locator('svg[data-chart="usage-per-day"] rect[data-tokens]').evaluate_all(
            "rects => rects.map(r => Number(r.dataset.tokens))")
        flows = await page.locator('table[data-table="flow"] tbody tr').count()
        await page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        await page.set_viewport_size({"width": 390, "height": 844})
        overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        await page.screenshot(path=str(tmp_path / "dashboard-390.png"), full_page=True)
        await browser.close()
    assert int(shown["total_tokens"]) == sum(r.total_tokens for r in records)
    assert int(shown["prompt_tokens"]) == sum(r.prompt_tokens for r in records)
    assert int(shown["completion_tokens"]) == sum(r.completion_tokens for r in records)
    assert Decimal(shown["cost"]) == sum((r.cost for r in records), Decimal(0))
    assert int(shown["runs"]) == len({r.run_id for r in records})
    assert sum(bars) == sum(r.total_tokens for r in records) and flows == 2
    assert cost_text.startswith("$")  # money in the price file's currency (USD)
    assert overflow <= 0  # no horizontal scroll at 390 px
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000
