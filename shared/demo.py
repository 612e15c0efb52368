"""`make demo`: the seed scenario end to end on the embedded defaults — SQLite store, two local emulators.

Two tenants bring their own "Azure OpenAI resource" (two emulator servers with different keys). For each,
`support-reply` loads the tenant's stored credential, creates the dynamic connection and answers; then one
tenant runs `triage-batch` (if / for_each / try) on the shared `default` connection. The demo checks that each
endpoint was called with its own tenant's key only, and prints answers, endpoints, tokens and costs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import shutil
import sys
from contextlib import ExitStack
from decimal import Decimal
from typing import Any

from shared.secret import Secret
from shared.settings import REPO_ROOT, Settings

DEMO_DIR = REPO_ROOT / ".tenantflow" / "demo"
TENANTS = [
    ("contoso", "Contoso Ltd", "My invoice for October shows the wrong VAT number.", "127.0.0.1"),
    ("fabrikam", "Fabrikam Inc", "How do I reset the password of my team's admin account?", "localhost"),
]


def fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:8]


async def demo(emulators: list, shared_default: Any) -> int:
    from shared.bootstrap import build_services

    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    settings = dataclasses.replace(
        Settings.from_env({}),
        sqlite_path=DEMO_DIR / "tenantflow.db",
        allowed_hosts=("127.0.0.1", "localhost"),
        default_endpoint=shared_default.base_url,
    )
    svc = await build_services(settings)
    failures = 0
    try:
        print(f"store: sqlite at {settings.sqlite_path.relative_to(REPO_ROOT)}")
        for (tenant_id, name, _, host), (emulator, key) in zip(TENANTS, emulators, strict=True):
            await svc.tenants.add(tenant_id, name)
            endpoint = f"http://{host}:{emulator.port}"
            await svc.credentials.set(tenant_id, "foundry", "azure_openai", endpoint=endpoint,
                                      api_version="2024-10-21", api_key=Secret(key))
            print(f"tenant {tenant_id:<9} credential foundry → {endpoint} (key ******, fingerprint {fingerprint(key)})")

        print("\n== support-reply: each tenant's own resource, through a dynamic connection ==")
        for tenant_id, _, ticket, _ in TENANTS:
            run = await svc.runs.run(tenant_id, "support-reply", {"ticket": ticket}, "cli")
            draft = next((s for s in run.steps if s.id == "draft"), None)
            if run.status != "succeeded" or draft is None or run.outputs is None:
                failures += 1
                print(f"{tenant_id}: FAILED: {run.error}")
                continue
            usage = run.usage
            print(f"\n[{tenant_id}] ticket: {ticket}")
            print(f"[{tenant_id}] answer: {run.outputs['reply']}")
            usage_records = await svc.stores.usage.list_for_run(tenant_id, run.run_id)
            hosts = ", ".join(sorted({r.endpoint_host for r in usage_records}))
            print(f"[{tenant_id}] served by: {hosts} (deployment {run.outputs['model']})")
            print(f"[{tenant_id}] tokens: {usage['prompt_tokens']} prompt + {usage['completion_tokens']} completion"
                  f" = {usage['total_tokens']}; cost ${Decimal(usage['cost']):.8f}")

        for (tenant_id, *_), (emulator, key) in zip(TENANTS, emulators, strict=True):
            stats = emulator.stats()
            seen = set(stats.get("by_key_fingerprint", {}))
            if seen != {fingerprint(key)}:
                failures += 1
                print(f"isolation check FAILED for {tenant_id}: endpoint saw keys {sorted(seen)}")
            else:
                print(f"\nisolation: {tenant_id}'s endpoint saw only {tenant_id}'s key ({stats['requests']} request)")

        print("\n== triage-batch (if / for_each / try) for contoso on the `default` connection ==")
        tickets = ["Production is down since 9:00!", "", "Please fix a typo on the pricing page",
                   "[[fault:429;times=1]] Checkout sometimes times out",
                   "[[content_filter]] A ticket the content filter blocks"]
        run = await svc.runs.run("contoso", "triage-batch", {"tickets": tickets}, "cli")
        if run.status != "succeeded" or run.outputs is None:
            failures += 1
            print(f"FAILED: {run.error}")
        else:
            for item in run.outputs["labels"]:
                print(f"  {item.get('label', item.get('error')):<32} ← {item['ticket'][:60]}")
            print(f"  classified {run.outputs['classified']}, failures {run.outputs['failures']}; "
                  f"{run.usage['total_tokens']} tokens, {run.usage['model_calls']} model calls, "
                  f"{shared_default.stats()['requests']} HTTP requests")
            print("  (a 429 was retried after retry-after-ms; a content-filter refusal was caught by try)")

        print("\n== usage by tenant ==")
        for row in await svc.stores.usage_queries.summarize(None, None, None, "tenant"):
            runs = f"{row.runs} run{'s' if row.runs != 1 else ''}"
            print(f"  {row.group:<10} {row.total_tokens:>6} tokens  {runs:<7} cost ${row.cost or 0:.8f}")
    finally:
        await svc.close()
    print("\ndemo ok" if not failures else f"\ndemo FAILED ({failures} problems)")
    return 0 if not failures else 1


def main() -> int:
    from shared.emulator.server import running_emulator

    keys = ["contoso-demo-key", "fabrikam-demo-key"]  # local emulator keys, not real secrets
    with ExitStack() as stack:
        emulators = [(stack.enter_context(running_emulator(port=0, api_keys={key})), key) for key in keys]
        shared_default = stack.enter_context(running_emulator(port=0))
        return asyncio.run(demo(emulators, shared_default))


if __name__ == "__main__":
    sys.exit(main())
