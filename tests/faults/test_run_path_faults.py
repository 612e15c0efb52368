"""Faults on the run path, with the real service stopped or killed (issue 10): PostgreSQL restarted mid-load,
and a worker killed (SIGKILL) while its model call is in flight. In each: no HTTP 500, no run left stuck after
the sweep, the ledger equals the budget counter equals the calls the model served, and nothing stays reserved."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.bootstrap import build_services
from shared.emulator.server import running_emulator
from shared.secret import Secret
from shared.services.metering import LEASE_TTL
from shared.services.runs import RUN_TIMEOUT
from shared.storage.models import Budget, period_of
from shared.storage.ports import StoreUnavailable
from tests.backends.fixtures import settings_env
from tests.backends.pg_cluster import free_port

pytestmark = pytest.mark.services
REQUESTS, CONCURRENCY, RESTART_AFTER = 150, 8, 40


def serve(settings: Any, emulator_url: str, tmp_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, **settings_env(settings), "TENANTFLOW_ALLOWED_HOSTS": "127.0.0.1",
           "TENANTFLOW_DEFAULT_ENDPOINT": emulator_url}
    for name in ("TENANTFLOW_QUEUE_CONNECTION", "AzureWebJobsStorage"):
        env.pop(name, None)
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen([str(Path(sys.executable).parent / "tenantflow"), "serve", "--port", str(port)],
                               env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{base}/health", timeout=2)
            return process, base
        except httpx.TransportError:
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)


async def tenant_with_budget(settings: Any, emulator_url: str, tenant: str, tokens: int) -> tuple[Any, str]:
    svc = await build_services(dataclasses.replace(settings, allowed_hosts=("127.0.0.1",)))
    created = await svc.tenants.add(tenant, tenant.title())
    await svc.credentials.set(tenant, "foundry", "azure_openai", endpoint=emulator_url, api_key=Secret("sk-fault"))
    await svc.stores.budgets.set_budget(Budget(tenant, tokens, None))
    return svc, created.api_key.reveal()


async def sweep_later(svc: Any) -> None:
    """The timer's sweep as it runs once the function timeout and the lease TTL have passed (first, this process's
    own pooled connections recover from the restart: the store answers again within a few tries)."""
    for _ in range(50):
        try:
            await svc.stores.health.ping()
            break
        except StoreUnavailable:
            await asyncio.sleep(0.1)
    later = datetime.now(UTC) + max(RUN_TIMEOUT, LEASE_TTL) + timedelta(minutes=1)
    svc.runs.now = lambda: later
    await svc.runs.sweep_interrupted(limit=1000)


async def assert_books_balance(svc: Any, tenant: str, served_calls: int) -> list[Any]:
    runs = await svc.stores.runs.list(tenant, limit=10_000)
    assert [r.run_id for r in runs if r.status in ("running", "queued")] == [], "runs left stuck"
    records = [record for run in runs for record in await svc.stores.usage.list_for_run(tenant, run.run_id)]
    counters = await svc.stores.budgets.counters(tenant, period_of(datetime.now(UTC)))
    assert counters.reserved_tokens == 0 and await svc.stores.bookkeeping.leases(tenant) == []
    assert counters.used_tokens == sum(r.total_tokens for r in records)
    assert len(records) == served_calls
    return runs


async def test_postgres_restarted_mid_load(throwaway_postgres, tmp_path):
    settings = await throwaway_postgres.settings()
    with running_emulator(faults=["latency=25"]) as emulator:
        svc, key = await tenant_with_budget(settings, emulator.base_url, "acme", 10**9)
        process, base = serve(settings, emulator.base_url, tmp_path)
        statuses: list[int] = []
        bad: list[str] = []
        try:
            async with httpx.AsyncClient(timeout=90) as client:
                async def one(index: int) -> None:
                    response = await client.post(f"{base}/flows/support-reply/runs", headers={"x-api-key": key},
                                                 json={"inputs": {"ticket": f"Where is order {index}?"}})
                    statuses.append(response.status_code)
                    if response.status_code not in (200, 503) or not response.headers.get(
                            "content-type", "").startswith(("application/json", "application/problem+json")):
                        bad.append(f"{response.status_code} {response.text[:300]}")
                    elif response.status_code == 503:
                        assert response.headers.get("retry-after") and response.json()["status"] == 503
                    else:
                        assert response.json()["status"] == "succeeded", response.text

                queue = asyncio.Queue[int]()
                for index in range(REQUESTS):
                    queue.put_nowait(index)

                async def worker() -> None:
                    while not queue.empty():
                        await one(queue.get_nowait())

                async def restart() -> None:
                    while len(statuses) < RESTART_AFTER:
                        await asyncio.sleep(0.01)
                    await asyncio.to_thread(throwaway_postgres.restart)

                await asyncio.wait_for(asyncio.gather(restart(), *[worker() for _ in range(CONCURRENCY)]), 240)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        try:
            assert bad == [], bad
            assert statuses.count(200) > REQUESTS // 2
            served = emulator.state.stats()["requests"]
            await sweep_later(svc)
            runs = await assert_books_balance(svc, "acme", served)
            assert len([r for r in runs if r.status == "succeeded"]) == statuses.count(200)
        finally:
            await svc.close()


async def test_worker_killed_during_a_model_call(throwaway_postgres, tmp_path):
    settings = await throwaway_postgres.settings()
    with running_emulator(faults=["latency=4000"]) as emulator:
        svc, key = await tenant_with_budget(settings, emulator.base_url, "acme", 100_000)
        process, base = serve(settings, emulator.base_url, tmp_path)
        try:
            async with httpx.AsyncClient(timeout=30) as client:
                call = asyncio.create_task(client.post(f"{base}/flows/support-reply/runs", headers={"x-api-key": key},
                                                       json={"inputs": {"ticket": "Where is my order?"}}))
                deadline = time.monotonic() + 20
                while emulator.state.stats()["requests"] == 0:
                    assert time.monotonic() < deadline and not call.done()
                    await asyncio.sleep(0.02)
                process.kill()  # SIGKILL while the model call is in flight
                process.wait(timeout=10)
                with pytest.raises(httpx.TransportError):
                    await call
        finally:
            if process.poll() is None:
                process.kill()
        try:
            [run] = await svc.stores.runs.list("acme")
            assert run.status == "running"
            held = await svc.stores.bookkeeping.leases("acme")
            assert len(held) == 1 and held[0].run_id == run.run_id
            assert (await svc.stores.budgets.counters("acme", held[0].period)).reserved_tokens == held[0].tokens
            await sweep_later(svc)
            [run] = await assert_books_balance(svc, "acme", served_calls=0)  # the answer never reached the app
            assert run.status == "failed" and run.usage["error_code"] == "interrupted"
        finally:
            await svc.close()
