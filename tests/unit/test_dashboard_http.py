"""The dashboard route as a browser and a script meet it, through the registered function over in-memory stores: a
signed link becomes a cookie and a redirect, the page and its exports then work with the cookie, bad links and
missing credentials are an HTML 401 for browsers and problem JSON otherwise, Easy Auth members see their tenants and
the operator role every tenant, runs drill down, and usage is broken down by the API key that started each run."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl

import azure.functions as func
import pytest

from shared.bootstrap import build_services
from shared.functions import runtime
from shared.functions.local_server import registered_functions
from shared.secret import Secret
from shared.services.dashboard_access import principal_header, sign_dashboard_token
from shared.services.members import TenantMembers
from shared.settings import Settings
from shared.storage.ports import NO_API_KEY
from tests.backends.fixtures import fresh_encryption_keys
from tests.fakes import FakeModel, ManualClock
from tests.memory.stores import InMemoryRunQueue, InMemoryStores

FUNCTIONS = {f.get_function_name(): f.get_user_function() for f in registered_functions()}
NOW = datetime(2026, 3, 14, 9, 26, 53, tzinfo=UTC)
HTML = {"accept": "text/html,application/xhtml+xml"}
ENDPOINT = "http://127.0.0.1:9"  # never called: the fake model answers


class Dashboard:
    def __init__(self, svc, queue) -> None:
        self.svc, self.queue = svc, queue
        self.keys: dict[str, str] = {}

    async def get(self, params=None, headers=None, url="http://localhost/api/dashboard"):
        request = func.HttpRequest(method="GET", url=url, headers=headers or {}, params=params or {},
                                   route_params={}, body=b"")
        return await FUNCTIONS["dashboard"](request)

    async def tenant(self, tenant_id: str) -> str:
        created = await self.svc.tenants.add(tenant_id, f"{tenant_id.title()} Ltd")
        await self.svc.credentials.set(tenant_id, "foundry", "azure_openai", endpoint=ENDPOINT, api_key=Secret("k"))
        self.keys[tenant_id] = created.api_key.reveal()
        return created.api_key.reveal()

    async def run_over_http(self, key: str, wait: bool = True):
        request = func.HttpRequest(method="POST", url="http://localhost/api/flows/support-reply/runs",
                                   headers={"x-api-key": key}, params={} if wait else {"wait": "false"},
                                   route_params={"flow": "support-reply"},
                                   body=json.dumps({"inputs": {"ticket": "Where is my parcel?"}}).encode())
        return json.loads((await FUNCTIONS["start_run"](request)).get_body())

    def link(self, tenant: str | None, operator: bool = False, expires: timedelta = timedelta(hours=1)) -> str:
        return sign_dashboard_token(self.svc.settings.encryption_keys[0].key, tenant, operator, NOW + expires)


@pytest.fixture
async def board(tmp_path):
    settings = dataclasses.replace(Settings.from_env({}), sqlite_path=tmp_path / "unused.db",
                                   allowed_hosts=("127.0.0.1",), encryption_keys=fresh_encryption_keys(),
                                   operator_key=Secret("op-key-0123456789"), trust_easy_auth=True)
    stores, queue = InMemoryStores(ManualClock(NOW)), InMemoryRunQueue()
    svc = await build_services(settings, stores=stores, queue=queue, clock=ManualClock(NOW), model=FakeModel())
    runtime.use(svc)
    yield Dashboard(svc, queue)
    runtime.use(None)
    await svc.close()


def key_id(api_key: str) -> str:
    return api_key.split("_")[1]


def cookie_of(response) -> str:
    return response.headers["set-cookie"].split(";")[0]


async def test_usage_is_recorded_and_broken_down_by_the_api_key_that_started_the_run(board):
    first = await board.tenant("contoso")
    second = (await board.svc.tenants.create_key("contoso"))[1].reveal()
    runs = [await board.run_over_http(first), await board.run_over_http(first), await board.run_over_http(second)]
    await board.svc.runs.run("contoso", "support-reply", {"ticket": "from the CLI"}, "cli")
    queued = await board.run_over_http(second, wait=False)  # the key goes with the run through the queue
    [message] = board.queue.receive()
    await board.svc.queue_worker.process(json.dumps(message))
    ledger = board.svc.stores.usage
    records = [r for run in [*runs, queued] for r in await ledger.list_for_run("contoso", run["run_id"])]
    assert [r.api_key_id for r in records] == [key_id(first)] * 2 + [key_id(second)] * 2
    response = await board.get({"group_by": "key", "format": "json"}, {"x-api-key": first})
    by_key = {row["key"]: row for row in json.loads(response.get_body())["rows"]}
    assert set(by_key) == {key_id(first), key_id(second), NO_API_KEY}
    assert by_key[key_id(first)]["runs"] == 2 and by_key[key_id(second)]["runs"] == 2
    assert by_key[key_id(first)]["total_tokens"] == sum(r.total_tokens for r in records[:2])
    page = (await board.get(headers={"x-api-key": first, **HTML})).get_body().decode()
    assert 'data-table="key"' in page and f'data-group="{key_id(second)}"' in page


async def test_a_signed_link_becomes_a_cookie_and_a_redirect_to_the_clean_url(board):
    await board.tenant("contoso")
    await board.run_over_http(board.keys["contoso"])
    opened = await board.get({"token": board.link("contoso"), "from": "2026-03-01", "to": "2026-03-14"}, HTML)
    assert opened.status_code == 303
    assert opened.headers["location"] == "/api/dashboard?from=2026-03-01&to=2026-03-14"
    cookie = opened.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie and "Path=/api" in cookie
    assert "Max-Age=3600" in cookie
    secure = await board.get({"token": board.link("contoso")}, {**HTML, "x-forwarded-proto": "https"})
    assert "; Secure" in secure.headers["set-cookie"]
    over_https = await board.get({"token": board.link("contoso")}, HTML, url="https://app.example/api/dashboard")
    assert "; Secure" in over_https.headers["set-cookie"]
    elsewhere = await board.get({"token": board.link("contoso")}, HTML, url="http://localhost//evil.example/x")
    assert elsewhere.headers["location"] == "/evil.example/x"  # never //host: the redirect stays on this site

    page = await board.get({"from": "2026-03-01", "to": "2026-03-14"}, {**HTML, "cookie": cookie_of(opened)})
    html = page.get_body().decode()
    assert page.status_code == 200 and "Usage of Contoso Ltd" in html and 'data-picker="tenant"' not in html
    exports = [href.replace("&amp;", "&") for href in re.findall(r'<a href="([^"]+)" data-export>', html)]
    assert exports and all(e.startswith("/api/dashboard?") for e in exports)
    params = dict(parse_qsl(next(e for e in exports if "format=csv" in e).split("?", 1)[1]))
    exported = await board.get(params, {"cookie": cookie_of(opened)})
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(exported.get_body().decode())))
    assert rows[-1][0] == "total" and int(rows[-1][3]) > 0


@pytest.mark.parametrize("case", ["expired", "tampered", "none"])
async def test_a_bad_link_or_no_credentials_is_an_html_401_for_browsers_and_problem_json_otherwise(board, case):
    await board.tenant("contoso")
    token = board.link("contoso", expires=timedelta(seconds=-1) if case == "expired" else timedelta(hours=1))
    if case == "tampered":
        token = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    as_link = {"token": token} if case != "none" else {}
    page = await board.get(as_link, HTML)
    assert page.status_code == 401 and page.headers["content-type"].startswith("text/html")
    html = page.get_body().decode()
    assert 'data-page="unauthorized"' in html and token not in html
    assert {"expired": "expired", "tampered": "signature does not match", "none": "no credentials"}[case] in html
    script = await board.get(as_link)
    assert script.status_code == 401 and script.headers["content-type"] == "application/problem+json"
    assert json.loads(script.get_body())["status"] == 401
    if case != "none":  # the same token as a cookie is refused the same way
        cookie = await board.get(headers={**HTML, "cookie": f"tf_dashboard={token}"})
        assert cookie.status_code == 401 and "set-cookie" not in cookie.headers


async def test_easy_auth_members_see_their_tenants_and_the_operator_role_sees_every_tenant(board):
    for tenant in ("contoso", "fabrikam", "northwind"):
        await board.tenant(tenant)
        await board.run_over_http(board.keys[tenant])
    members = TenantMembers(board.svc.stores.tenants, board.svc.stores.members)
    await members.add("contoso", "ana@example.com")
    await members.add("fabrikam", "ana@example.com")
    ana = {**HTML, "x-ms-client-principal": principal_header([{"typ": "name", "val": "Ana@example.com"}])}
    page = (await board.get(headers=ana)).get_body().decode()
    assert "Usage of Contoso Ltd" in page and 'data-picker="tenant"' in page
    assert '<option value="fabrikam"' in page and "northwind" not in page and 'value=""' not in page
    assert "Usage of Fabrikam Ltd" in (await board.get({"tenant": "fabrikam"}, ana)).get_body().decode()
    assert (await board.get({"tenant": "northwind"}, ana)).status_code == 404  # not hers: as unknown as missing
    bob = {**HTML, "x-ms-client-principal": principal_header([{"typ": "name", "val": "bob@example.com"}])}
    assert (await board.get(headers=bob)).status_code == 403
    operator = {**HTML, "x-ms-client-principal": principal_header(
        [{"typ": "name", "val": "ops@example.com"}, {"typ": "roles", "val": "Tenantflow.Operator"}])}
    everyone = (await board.get(headers=operator)).get_body().decode()
    assert "Usage of all tenants" in everyone and 'data-section="tenants"' in everyone
    assert all(f'<option value="{t}"' in everyone for t in ("contoso", "fabrikam", "northwind"))
    board.svc.settings = dataclasses.replace(board.svc.settings, trust_easy_auth=False)
    assert (await board.get(headers=operator)).status_code == 401  # the header means nothing unless trusted


async def test_runs_drill_down_to_their_steps_within_the_tenant(board):
    await board.tenant("contoso")
    await board.tenant("fabrikam")
    run = await board.run_over_http(board.keys["contoso"])
    other = await board.run_over_http(board.keys["fabrikam"])
    page = (await board.get(headers={"x-api-key": board.keys["contoso"], **HTML})).get_body().decode()
    assert f'data-run="{run["run_id"]}"' in page and other["run_id"] not in page
    link = f'?tenant=contoso&amp;run={run["run_id"]}'
    assert link in page
    detail = await board.get({"tenant": "contoso", "run": run["run_id"]},
                             {"x-api-key": board.keys["contoso"], **HTML})
    html = detail.get_body().decode()
    assert detail.status_code == 200 and 'id="run"' in html and 'data-step="draft"' in html
    assert (await board.get({"run": other["run_id"]}, {"x-api-key": board.keys["contoso"], **HTML})).status_code == 404
    operator = await board.get({"tenant": "fabrikam", "run": other["run_id"]}, {"x-operator-key": "op-key-0123456789"})
    assert operator.status_code == 200 and f'Run {other["run_id"]}' in operator.get_body().decode()
