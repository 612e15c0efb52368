"""Budgets hold across processes: 8 worker processes hammer one tenant's budget on each backend."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from datetime import UTC, datetime

from shared.storage.models import Budget, period_of
from tests.backends.fixtures import settings_env

WORKERS, ATTEMPTS, LIMIT = 8, 12, 1500


async def test_eight_processes_never_exceed_the_budget(stores, store_settings):
    tenant = "t-" + uuid.uuid4().hex[:8]
    await stores.budgets.set_budget(Budget(tenant, LIMIT, None))
    env = {**os.environ, **settings_env(store_settings)}
    processes = [await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.contract.budget_worker", tenant, str(ATTEMPTS), f"w{i}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env) for i in range(WORKERS)]
    reports = []
    for process in processes:
        out, err = await asyncio.wait_for(process.communicate(), timeout=120)
        assert process.returncode == 0, err.decode()[-2000:]
        reports.append(json.loads(out.decode().strip().splitlines()[-1]))
    counters = await stores.budgets.counters(tenant, period_of(datetime.now(UTC)))
    granted = sum(r["granted"] for r in reports)
    assert sum(r["refused"] for r in reports) > 0, "the limit was never reached: the test proves nothing"
    assert counters.reserved_tokens == 0
    assert counters.used_tokens == granted <= LIMIT
    ledger = [await stores.usage.list_for_run(tenant, f"w{i}-{a}") for i in range(WORKERS) for a in range(ATTEMPTS)]
    assert sum(r.total_tokens for records in ledger for r in records) == counters.used_tokens
