"""The operator HTTP API (route prefix `api`): tenants, API keys, credentials, budgets and schedules of a deployed app,
for the operator key (`x-operator-key`) or the Easy Auth app role Tenantflow.Operator. Each function hands its
request to its handler in shared.functions.admin_handlers; `tenantflow --url URL --operator-key K …` is its client.
(`GET /api/admin/usage` lives in shared.functions.http.) Routes start with ADMIN, not the word `admin`, which the
Functions host reserves (shared.functions.routes)."""

from __future__ import annotations

import azure.functions as func

from shared.functions import admin_handlers as handlers
from shared.functions.http import respond
from shared.functions.routes import ADMIN

bp = func.Blueprint()
ANONYMOUS = func.AuthLevel.ANONYMOUS  # the handlers check the operator themselves


@bp.route(route=ADMIN + "/tenants", methods=["POST"], auth_level=ANONYMOUS)
async def admin_add_tenant(req: func.HttpRequest) -> func.HttpResponse:
    return await respond(req, handlers.add_tenant)


@bp.route(route=ADMIN + "/tenants", methods=["GET"], auth_level=ANONYMOUS)
async def admin_list_tenants(req: func.HttpRequest) -> func.HttpResponse:
    return await respond(req, handlers.list_tenants)


@bp.route(route=ADMIN + "/tenants/{tenant}/suspend", methods=["POST"], auth_level=ANONYMOUS)
async def admin_suspend_tenant(req: func.HttpRequest) -> func.HttpResponse:
    return await respond(req, handlers.suspend_tenant)


@bp.route(route=ADMIN + "/tenants/{tenant}/activate", methods=["POST"], auth_level=ANONYMOUS)
async def admin_activate_tenant(req: func.HttpRequest) -> func.HttpResponse:
    return await respond(req, handlers.activate_tenant)


@bp.route(route=ADMIN + "/tenants/{tenant}/keys", methods=["POST"], auth_level=ANONYMOUS)
async def admin_create_key(req: func.HttpRequest) -> func.HttpResponse:
    return await respond(req, handlers.create_key)


@bp.route(route=ADMIN + "/tenants/{tenant}/keys", methods=["GET"], auth_level=ANONYMOUS)
async def admin_list_keys(req: func.HttpRequest) -> func.HttpResponse:
    return await respond(req, handlers.list_keys)


@bp.route(route=ADMIN + "/tenants/{tenant}/keys/{key_id}", methods=["DELETE"], auth_level=ANONYMOUS)
async def admin_revoke_key(req: func.HttpRequest) -> func.HttpResponse:
    return await respond(req, handlers.revoke_key)


@bp.route(route=ADMIN + "/tenants/{tenant}/credentials", methods=["GET"], auth_level=ANONYMOUS)
async def admin_list_credentials(req: func.HttpRequest) -> func.HttpResponse:
    return await respond(req, handlers.list_credentials)


@bp.route(route=ADMIN + "/tenants/{tenant}/credentials/{name}", methods=["PUT"], auth_level=ANONYMOUS)
async def admin_put_credential(req: func.HttpRequest) -> func.HttpResponse:
    return await respond(req, handlers.put_credential)


@bp.route(route=ADMIN + "/tenants/{tenant}/credentials/{name}", methods=["GET"], auth_level=ANONYMOUS)
async def admin_get_credential(req: func.HttpRequest) -> func.HttpResponse:
    return await respond(req, handlers.get_credential)


@bp.route(route=ADMIN + "/tenants/{tenant}/credentials/{name}", methods=["DELETE"], auth_level=ANONYMOUS)
async def admin_delete_credential(req: func.HttpRequest) -> func.HttpResponse:
    return await respond(req, handlers.delete_credential)


@bp.route(route=ADMIN + "/tenants/{tenant}/budget", methods=["PUT"], auth_level=ANONYMOUS)
async def admin_put_budget(req: func.HttpRequest) -> func.HttpResponse:
    return await respond(req, handlers.put_budget)


@bp.route(route=ADMIN + "/tenants/{tenant}/budget", methods=["GET"], auth_level=ANONYMOUS)
async def admin_get_budget(req: func.HttpRequest) -> func.HttpResponse:
    return await respond(req, handlers.get_budget)


@bp.route(route=ADMIN + "/schedules", methods=["POST"], auth_level=ANONYMOUS)
async def admin_add_schedule(req: func.HttpRequest) -> func.HttpResponse:
    return await respond(req, handlers.add_schedule)


@bp.route(route=ADMIN + "/schedules", methods=["GET"], auth_level=ANONYMOUS)
async def admin_list_schedules(req: func.HttpRequest) -> func.HttpResponse:
    return await respond(req, handlers.list_schedules)


@bp.route(route=ADMIN + "/schedules", methods=["DELETE"], auth_level=ANONYMOUS)
async def admin_remove_schedule_by_query(req: func.HttpRequest) -> func.HttpResponse:
    return await respond(req, handlers.remove_schedule)


@bp.route(route=ADMIN + "/schedules/{schedule_id}", methods=["DELETE"], auth_level=ANONYMOUS)
async def admin_remove_schedule(req: func.HttpRequest) -> func.HttpResponse:
    return await respond(req, handlers.remove_schedule)
