"""`make screenshot`: seeds demo usage into a throwaway SQLite store (runs started with two API keys, and one from the
CLI), serves the dashboard locally, opens it from a signed link as a person would, and saves PNGs of it at 1280 and
390 px wide from headless Chromium (Debian's chromium, driven by Playwright).
Usage: python -m shared.web.screenshot OUT.png (the narrow one goes to OUT-390.png)"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"  # Debian's package; Playwright's own browser download is not used
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]


async def capture(out: Path, emulator_url: str) -> None:
    from playwright.async_api import async_playwright

    from shared.bootstrap import build_services
    from shared.functions import runtime
    from shared.functions.local_server import serving_in_this_loop
    from shared.secret import Secret
    from shared.services.dashboard_access import dashboard_url, sign_dashboard_token
    from shared.settings import Settings

    folder = Path(tempfile.mkdtemp(prefix="tenantflow-screenshot-"))
    settings = dataclasses.replace(Settings.from_env({}), sqlite_path=folder / "t.db", allowed_hosts=("127.0.0.1",),
                                   default_endpoint=emulator_url)
    svc = await build_services(settings)
    runtime.use(svc)
    await svc.tenants.add("contoso", "Contoso Ltd")
    await svc.credentials.set("contoso", "foundry", "azure_openai", endpoint=emulator_url, api_key=Secret("demo"))
    await svc.usage.set_budget("contoso", 5000, "0.05")
    web_shop, help_desk = (await svc.tenants.create_key("contoso"))[0], (await svc.tenants.create_key("contoso"))[0]
    for ticket, key_id in (("Refund my order", web_shop), ("My parcel is late", web_shop),
                           ("Change my address", help_desk), ("Invoice has the wrong VAT", None)):
        await svc.runs.run("contoso", "support-reply", {"ticket": ticket}, "http" if key_id else "cli",
                           api_key_id=key_id)
    await svc.runs.run("contoso", "triage-batch", {"tickets": ["Site down!", "Typo", "Slow checkout"]}, "http",
                       api_key_id=help_desk)
    token = sign_dashboard_token(svc.settings.encryption_keys[0].key, "contoso", False,
                                 datetime.now(UTC) + timedelta(hours=1))
    try:
        async with serving_in_this_loop() as base_url, async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            out.parent.mkdir(parents=True, exist_ok=True)
            for width, path in ((1280, out), (390, narrow_path(out))):
                page = await browser.new_page(viewport={"width": width, "height": 900})
                await page.goto(dashboard_url(base_url, token))  # the link → cookie → the clean URL
                await page.screenshot(path=str(path), full_page=True)
                await page.close()
            await browser.close()
    finally:
        await svc.close()


def narrow_path(out: Path) -> Path:
    """Where the 390 px (phone) screenshot goes: beside the wide one, `-390` before the suffix."""
    return out.with_name(f"{out.stem}-390{out.suffix}")


def main() -> int:
    from shared.emulator.server import running_emulator

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "screenshots/dashboard.png")
    with running_emulator() as emulator:
        asyncio.run(capture(out, emulator.base_url))
    print(f"wrote {out} (1280 px) and {narrow_path(out)} (390 px)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
