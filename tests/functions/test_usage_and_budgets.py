"""Usage ledger, prices, budgets, the usage API, the CLI and the dashboard agree — on every backend."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import sys
from decimal import Decimal

from shared.services.usage import UsageQuery
from tests.backends.fixtures import settings_env

TICKETS = ["Refund please", "Where is my parcel?", "Cancel my plan"]


async def seed(app):
    keys = {"contoso": await app.tenant("contoso"), "fabrikam": await app.tenant("fabrikam")}
    runs = []
    for tenant, key in keys.items():
        for ticket in TICKETS[: 3 if tenant == "contoso" else 2]:
            response = await app.http("start_run", "POST", "flows/support-reply/runs", {"inputs": {"ticket": ticket}},
                                      {"x-api-key": key}, route={"flow": "support-reply"})
            assert response.status_code == 200
            runs.append(json.loads(response.get_body()))
    batch = await app.http("start_run", "POST", "flows/triage-batch/runs",
                           {"inputs": {"tickets": ["server down!", "typo on page"]}}, {"x-api-key": keys["contoso"]},
                           route={"flow": "triage-batch"})
    # its worst case (50 iterations) is over the sync limit: it is queued (202), and the queue worker runs it
    assert batch.status_code == 202
    for message in await app.queued_messages():
        assert await app.deliver(json.dumps(message)) == "done"
    queued = json.loads(batch.get_body())
    run = await app.svc.stores.runs.get(queued["tenant"], queued["run_id"])
    assert run is not None and run.status == "succeeded"
    runs.append(queued)
    return keys, runs


async def ledger_totals(app, runs):
    records = []
    for run in runs:
        records += await app.svc.stores.usage.list_for_run(run["tenant"], run["run_id"])
    return records


def cli_usage(settings, *args):
    env = {**os.environ, **settings_env(settings)}
    result = subprocess.run([sys.executable, "-m", "shared.cli", "usage", "--format", "json", *args], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


async def test_api_cli_dashboard_and_ledger_agree(app_on_every_backend):
    app = app_on_every_backend
    keys, runs = await seed(app)
    records = await ledger_totals(app, runs)
    contoso = [r for r in records if r.tenant_id == "contoso"]
    ledger_tokens = sum(r.total_tokens for r in contoso)
    ledger_cost = sum((r.cost for r in contoso), Decimal(0))
    assert ledger_tokens > 0 and len({r.run_id for r in contoso}) == 4

    api = json.loads((await app.http("usage", "GET", "usage", headers={"x-api-key": keys["contoso"]},
                                     params={"group_by": "model"})).get_body())
    assert api["totals"]["total_tokens"] == ledger_tokens and Decimal(api["totals"]["cost"]) == ledger_cost
    assert api["totals"]["runs"] == 4 and api["rows"][0]["model"] == "gpt-4o-mini"

    cli = cli_usage(app.svc.settings, "--tenant", "contoso", "--group-by", "flow")
    assert cli["totals"] == api["totals"]
    assert {row["flow"]: row["runs"] for row in cli["rows"]} == {"support-reply": 3, "triage-batch": 1}
    everyone = cli_usage(app.svc.settings, "--group-by", "tenant")
    assert {row["tenant"] for row in everyone["rows"]} == {"contoso", "fabrikam"}
    assert everyone["totals"]["total_tokens"] == sum(r.total_tokens for r in records)
    by_key = cli_usage(app.svc.settings, "--group-by", "key")  # every run here was started over HTTP with a key
    assert {row["key"]: row["runs"] for row in by_key["rows"]} == {
        keys["contoso"].split("_")[1]: 4, keys["fabrikam"].split("_")[1]: 2}

    page = (await app.http("dashboard", "GET", "dashboard", headers={"x-api-key": keys["contoso"]})).get_body()
    shown = dict(re.findall(r'data-metric="(\w+)" data-value="([^"]*)"', page.decode()))
    assert int(shown["total_tokens"]) == ledger_tokens and Decimal(shown["cost"]) == ledger_cost
    assert int(shown["runs"]) == 4 and "fabrikam" not in page.decode()


async def test_usage_api_isolation_errors_and_csv(app):
    keys, _ = await seed(app)
    other = json.loads((await app.http("usage", "GET", "usage", headers={"x-api-key": keys["fabrikam"]})).get_body())
    assert other["tenant"] == "fabrikam" and other["totals"]["runs"] == 2
    refused = await app.http("usage", "GET", "usage", headers={"x-api-key": keys["contoso"]},
                             params={"group_by": "tenant"})
    assert refused.status_code == 422 and json.loads(refused.get_body())["errors"][0]["field"] == "group_by"
    bad_date = await app.http("usage", "GET", "usage", headers={"x-api-key": keys["contoso"]}, params={"from": "May"})
    assert bad_date.status_code == 422 and json.loads(bad_date.get_body())["errors"][0]["field"] == "from"
    csv = (await app.http("usage", "GET", "usage", headers={"x-api-key": keys["contoso"]},
                          params={"format": "csv", "group_by": "flow"})).get_body().decode().splitlines()
    assert csv[0] == "flow,prompt_tokens,completion_tokens,total_tokens,cost,runs" and csv[-1].startswith("total,")
    assert (await app.http("admin_usage", "GET", "admin/usage", headers={"x-api-key": keys["contoso"]})).status_code \
        == 401


async def test_redelivered_runs_leave_the_ledger_unchanged(app):
    await app.tenant("contoso")
    messages = [json.dumps({"run_id": f"redeliver-{i}", "tenant": "contoso", "flow": "support-reply",
                            "inputs": {"ticket": f"ticket {i}"}}) for i in range(5)]
    for message in messages:
        await app.queue(message)
    first = await app.svc.usage.summary(UsageQuery.parse("contoso", None, None, "day"))
    for _ in range(2):
        await asyncio.gather(*[app.queue(message, dequeue_count=2) for message in messages])
    again = await app.svc.usage.summary(UsageQuery.parse("contoso", None, None, "day"))
    assert first == again and first["totals"]["runs"] == 5


async def test_budget_exceeded_is_refused_before_the_call_with_429(app):
    key = await app.tenant("contoso")
    await app.svc.usage.set_budget("contoso", 200, None)
    before = app.emulator.stats()["requests"]
    response = await app.http("start_run", "POST", "flows/support-reply/runs", {"inputs": {"ticket": "x"}},
                              {"x-api-key": key}, route={"flow": "support-reply"})
    problem = json.loads(response.get_body())
    assert response.status_code == 429 and problem["status"] == 429
    assert problem["limit"] == "200" and problem["reset"].endswith("Z") and "used" in problem
    assert problem["run"]["status"] == "failed" and "budget_exceeded" in problem["detail"]
    assert app.emulator.stats()["requests"] == before
    status = await app.svc.usage.budget_status("contoso")
    assert status["reserved_tokens"] == 0 and status["used_tokens"] == 0


async def test_unknown_model_is_recorded_with_null_cost_and_a_warning(app, caplog):
    key = await app.tenant("contoso")
    caplog.set_level(logging.WARNING)
    response = await app.http("start_run", "POST", "flows/support-reply/runs",
                              {"inputs": {"ticket": "x", "model": "my-custom-deployment"}}, {"x-api-key": key},
                              route={"flow": "support-reply"})
    run = json.loads(response.get_body())
    (record,) = await app.svc.stores.usage.list_for_run("contoso", run["run_id"])
    assert record.cost is None and record.total_tokens > 0 and run["usage"]["cost"] is None
    assert "no price for model my-custom-deployment" in caplog.text
