"""The operator HTTP API in-process, through the registered Functions themselves (real azure.functions requests), on
SQLite and PostgreSQL: who may call it, each route's answer, and every refusal as problem details naming the field
(404 unknown, 409 duplicate, 422 invalid) — never a 500, never a secret in an answer."""

from __future__ import annotations

import dataclasses
import importlib
import json
from typing import Any

import azure.functions as func
import pytest

from shared.bootstrap import build_services
from shared.functions import runtime
from shared.secret import Secret
from shared.services.dashboard_access import principal_header
from tests.functions.conftest import FUNCTIONS

OPERATOR_KEY = "operator-key-for-tests-0b1c"
CANARY = "sk-canary-admin-api-51f7"
OPERATOR = {"x-operator-key": OPERATOR_KEY}


class AdminApi:
    def __init__(self, svc: Any) -> None:
        self.svc = svc

    async def call(self, name: str, method: str, path: str, body: Any = b"", route: dict[str, str] | None = None,
                   params: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = func.HttpRequest(method=method, url=f"http://localhost/api/{path}", body=raw,
                                   headers=OPERATOR if headers is None else headers, route_params=route or {},
                                   params=params or {})
        response = await FUNCTIONS[name].get_user_function()(request)
        assert response.status_code < 500, response.get_body()
        text = response.get_body().decode()
        assert CANARY not in text
        if response.status_code >= 400:
            assert response.headers["content-type"] == "application/problem+json"
        return response.status_code, json.loads(text) if text else None


@pytest.fixture(params=["sqlite", "postgres"])
async def admin(request, tmp_path):
    backend = importlib.import_module(f"tests.backends.{request.param}_backend")
    settings = await backend.provision(tmp_path)
    settings = dataclasses.replace(settings, operator_key=Secret(OPERATOR_KEY), allowed_hosts=("127.0.0.1",))
    svc = await build_services(settings)
    runtime.use(svc)
    yield AdminApi(svc)
    runtime.use(None)
    await svc.close()
    await backend.dispose(settings)


def field_of(problem: dict[str, Any]) -> str:
    return problem["errors"][0]["field"]


async def test_only_the_operator_key_or_the_operator_role_behind_easy_auth(admin):
    assert (await admin.call("admin_list_tenants", "GET", "admin/tenants", headers={}))[0] == 401
    assert (await admin.call("admin_list_tenants", "GET", "admin/tenants",
                             headers={"x-operator-key": OPERATOR_KEY + "x"}))[0] == 401
    operator = {"x-ms-client-principal": principal_header([{"typ": "roles", "val": "Tenantflow.Operator"}])}
    reader = {"x-ms-client-principal": principal_header([{"typ": "roles", "val": "Tenantflow.Reader"}])}
    assert (await admin.call("admin_list_tenants", "GET", "admin/tenants", headers=operator))[0] == 401  # not trusted
    admin.svc.settings = dataclasses.replace(admin.svc.settings, trust_easy_auth=True)
    assert (await admin.call("admin_list_tenants", "GET", "admin/tenants", headers=operator)) == (200, [])
    assert (await admin.call("admin_list_tenants", "GET", "admin/tenants", headers=reader))[0] == 401
    status, problem = await admin.call("admin_add_tenant", "POST", "admin/tenants", {"id": "x1"}, headers={})
    assert status == 401 and "x-operator-key" in problem["detail"]
    assert await admin.svc.tenants.get("x1") is None


async def test_tenants_and_keys(admin):
    status, added = await admin.call("admin_add_tenant", "POST", "admin/tenants", {"id": "contoso", "name": "Contoso"})
    assert status == 201 and (added["id"], added["name"], added["status"]) == ("contoso", "Contoso", "active")
    assert (await admin.svc.tenants.authenticate(added["key"])).id == "contoso"
    for body, status, field in (({"id": "contoso", "name": "Again"}, 409, "id"), ({"id": "Bad Id!"}, 422, "id"),
                                ({"id": "ok-id", "name": "a\x07b"}, 422, "name"), ({"id": "ok-id", "plan": "pro"}, 422,
                                                                                "plan"), ({"name": "no id"}, 422, "id"),
                                ({"id": "ok-id", "name": ""}, 422, "name"), (["contoso"], 422, "body")):
        answer = await admin.call("admin_add_tenant", "POST", "admin/tenants", body)
        assert (answer[0], field_of(answer[1])) == (status, field), body
    assert (await admin.call("admin_add_tenant", "POST", "admin/tenants", b"{not json"))[0] == 400
    _, tenants = await admin.call("admin_list_tenants", "GET", "admin/tenants")
    assert [t["id"] for t in tenants] == ["contoso"]

    route = {"tenant": "contoso"}
    assert (await admin.call("admin_suspend_tenant", "POST", "admin/tenants/contoso/suspend", route=route))[1][
        "status"] == "suspended"
    assert (await admin.svc.tenants.get("contoso")).status == "suspended"
    assert (await admin.call("admin_activate_tenant", "POST", "admin/tenants/contoso/activate", route=route))[1][
        "status"] == "active"
    assert (await admin.call("admin_list_keys", "GET", "admin/tenants/x/keys", route={"tenant": "Not An Id"}))[0] == 404
    status, problem = await admin.call("admin_suspend_tenant", "POST", "admin/tenants/nobody/suspend",
                                       route={"tenant": "nobody"})
    assert (status, field_of(problem), problem["detail"]) == (404, "tenant", "unknown tenant 'nobody'")

    status, issued = await admin.call("admin_create_key", "POST", "admin/tenants/contoso/keys", route=route)
    assert status == 201 and set(issued) == {"key_id", "key"} and issued["key"].startswith(f"tf_{issued['key_id']}_")
    _, keys = await admin.call("admin_list_keys", "GET", "admin/tenants/contoso/keys", route=route)
    assert {k["key_id"] for k in keys} == {added["key_id"], issued["key_id"]}
    assert issued["key"] not in json.dumps(keys) and added["key"] not in json.dumps(keys)
    revoke = {"tenant": "contoso", "key_id": issued["key_id"]}
    assert (await admin.call("admin_revoke_key", "DELETE", "admin/tenants/contoso/keys/x", route=revoke)) == (204, None)
    assert await admin.svc.tenants.authenticate(issued["key"]) is None
    assert await admin.svc.tenants.authenticate(added["key"]) is not None

    # another tenant's key id is as unknown as a missing one
    await admin.call("admin_add_tenant", "POST", "admin/tenants", {"id": "fabrikam"})
    status, problem = await admin.call("admin_revoke_key", "DELETE", "admin/tenants/fabrikam/keys/x",
                                       route={"tenant": "fabrikam", "key_id": added["key_id"]})
    assert (status, field_of(problem)) == (404, "key_id")
    assert await admin.svc.tenants.authenticate(added["key"]) is not None


async def test_credentials_are_written_and_never_answered(admin, emulator):
    await admin.svc.tenants.add("contoso")
    route = {"tenant": "contoso", "name": "foundry"}
    body = {"kind": "azure_openai", "endpoint": emulator.base_url, "api_key": CANARY, "config": {"region": "eu"}}
    status, view = await admin.call("admin_put_credential", "PUT", "admin/tenants/contoso/credentials/foundry", body,
                                    route=route)
    assert status == 200 and (view["api_key"], view["configs"], view["version"]) == ("******", {"region": "eu"}, 1)
    fields = await admin.svc.credentials.load("contoso", "foundry")
    assert fields["api_key"].reveal() == CANARY and fields["region"] == "eu"
    status, shown = await admin.call("admin_get_credential", "GET", "admin/tenants/contoso/credentials/foundry",
                                     route=route)
    assert status == 200 and shown["api_key"] == "******" and shown["endpoint"] == emulator.base_url
    _, listed = await admin.call("admin_list_credentials", "GET", "admin/tenants/contoso/credentials",
                                 route={"tenant": "contoso"})
    assert [c["name"] for c in listed] == ["foundry"]

    refusals = [
        ({"kind": "azure_openai", "api_key": CANARY}, 422, "endpoint"),
        ({"kind": "azure_openai", "endpoint": "https://169.254.169.254", "api_key": CANARY}, 422, "endpoint"),
        ({"kind": "openai", "auth": "entra", "api_key": CANARY}, 422, "auth"),
        ({"kind": "azure_openai", "endpoint": emulator.base_url, "auth": "entra", "api_key": CANARY}, 422, "api_key"),
        ({"kind": "gemini", "api_key": CANARY}, 422, "kind"),
        ({"kind": "custom", "config": {"api_key": "x"}}, 422, "config.api_key"),
        ({"kind": "custom", "config": {"depth": 3}}, 422, "config.depth"),
        ({"kind": "azure_openai", "endpoint": emulator.base_url, "api_key": CANARY, "api_version": "v 1"}, 422,
         "api_version"),
        ({"kind": "azure_openai", "endpoint": emulator.base_url, "password": CANARY}, 422, "password"),
    ]
    for bad, status, field in refusals:
        answer = await admin.call("admin_put_credential", "PUT", "admin/tenants/contoso/credentials/foundry", bad,
                                  route=route)
        assert (answer[0], field_of(answer[1])) == (status, field), bad
    status, problem = await admin.call("admin_put_credential", "PUT", "admin/tenants/contoso/credentials/Bad Name",
                                       body, route={"tenant": "contoso", "name": "Bad Name"})
    assert (status, field_of(problem)) == (422, "name")
    status, problem = await admin.call("admin_put_credential", "PUT", "admin/tenants/nobody/credentials/foundry",
                                       body, route={"tenant": "nobody", "name": "foundry"})
    assert (status, field_of(problem)) == (404, "tenant")
    assert (await admin.svc.credentials.get("contoso", "foundry")).version == 1  # no refusal wrote anything

    assert (await admin.call("admin_delete_credential", "DELETE", "admin/tenants/contoso/credentials/foundry",
                             route=route)) == (204, None)
    for name, method in (("admin_get_credential", "GET"), ("admin_delete_credential", "DELETE")):
        status, problem = await admin.call(name, method, "admin/tenants/contoso/credentials/foundry", route=route)
        assert (status, field_of(problem)) == (404, "name")


async def test_budgets_and_schedules(admin):
    await admin.svc.tenants.add("contoso")
    route = {"tenant": "contoso"}
    status, budget = await admin.call("admin_put_budget", "PUT", "admin/tenants/contoso/budget",
                                      {"monthly_tokens": 1000, "monthly_cost": "2.50"}, route=route)
    assert status == 200 and (budget["monthly_tokens"], budget["monthly_cost"], budget["used_tokens"]) == (
        1000, "2.5", 0)
    assert (await admin.call("admin_get_budget", "GET", "admin/tenants/contoso/budget", route=route))[1] == budget
    for bad, field in (({}, "monthly_tokens"), ({"monthly_tokens": -1}, "monthly_tokens"),
                       ({"monthly_tokens": "many"}, "monthly_tokens"), ({"monthly_tokens": True}, "monthly_tokens"),
                       ({"monthly_cost": "abc"}, "monthly_cost"), ({"monthly_cost": "-1"}, "monthly_cost"),
                       ({"monthly_cost": [1]}, "monthly_cost"), ({"limit": 5}, "limit")):
        status, problem = await admin.call("admin_put_budget", "PUT", "admin/tenants/contoso/budget", bad,
                                           route=route)
        assert (status, field_of(problem)) == (422, field), bad
    assert (await admin.call("admin_get_budget", "GET", "admin/tenants/nobody/budget",
                             route={"tenant": "nobody"}))[0] == 404

    schedule = {"tenant": "contoso", "flow": "support-reply", "cron": "*/5 * * * *", "inputs": {"ticket": "t"}}
    status, added = await admin.call("admin_add_schedule", "POST", "admin/schedules", schedule)
    assert status == 201 and {k: added[k] for k in schedule} == schedule and added["enabled"] is True
    for bad, status, field in (({**schedule, "cron": "every minute"}, 422, "cron"),
                               ({**schedule, "flow": "no-such-flow"}, 422, "flow"),
                               ({**schedule, "inputs": {"ticket": 5}}, 422, "inputs.ticket"),
                               ({**schedule, "inputs": {}}, 422, "inputs.ticket"),
                               ({**schedule, "tenant": "nobody"}, 404, "tenant"),
                               ({**schedule, "every": "5m"}, 422, "every")):
        answer = await admin.call("admin_add_schedule", "POST", "admin/schedules", bad)
        assert (answer[0], field_of(answer[1])) == (status, field), bad
    await admin.svc.tenants.suspend("contoso")
    assert (await admin.call("admin_add_schedule", "POST", "admin/schedules", schedule))[0] == 409
    assert (await admin.call("admin_list_schedules", "GET", "admin/schedules", params={"tenant": "nobody"}))[0] == 404
    _, listed = await admin.call("admin_list_schedules", "GET", "admin/schedules", params={"tenant": "contoso"})
    assert [s["id"] for s in listed] == [added["id"]]
    assert (await admin.call("admin_remove_schedule", "DELETE", "admin/schedules/x",
                             route={"schedule_id": added["id"]})) == (204, None)
    status, problem = await admin.call("admin_remove_schedule_by_query", "DELETE", "admin/schedules",
                                       params={"id": added["id"]})
    assert (status, field_of(problem)) == (404, "schedule_id")
    assert await admin.svc.schedules.list("contoso") == []


def test_every_route_passes_the_hosts_reserved_route_rule_and_serve_maps_it_back():
    """The Functions host puts a function whose route starts with `admin` or `runtime` in error (404 on Azure, while
    every in-process test passes): the operator routes start with a parameter constrained to `admin` instead."""
    from shared.functions.local_server import http_functions
    from shared.functions.routes import ADMIN, plain_path, reserved_by_host

    routes = [route for route, _, _ in http_functions()]
    assert [route for route in routes if reserved_by_host(route)] == []
    assert reserved_by_host("admin/usage") and reserved_by_host("/Runtime/x") and not reserved_by_host(ADMIN + "/x")
    served = {plain_path(route) for route in routes}
    assert {"admin/usage", "admin/tenants", "admin/tenants/{tenant}/credentials/{name}",
            "admin/schedules/{schedule_id}"} <= served
    assert plain_path("items/{id:int}/{x:regex(^y$)}") == "items/{id:int}/y"
