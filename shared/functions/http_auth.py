"""Who is calling, from HTTP headers: a tenant's API key (`x-api-key`), the operator key (`x-operator-key`), or a
webhook signature (`x-tenantflow-signature: t=<unix seconds>,v1=<hex>`). Tenant identity never comes from the
body."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from shared.functions.api_messages import ApiRequest
from shared.functions.problems import ProblemDetails, unauthenticated

if TYPE_CHECKING:
    from shared.bootstrap import Services
    from shared.storage.models import Tenant

MAX_SIGNATURE_HEADER = 512


async def caller(svc: Services, request: ApiRequest) -> Tenant:
    """The active tenant whose API key is in `x-api-key`; 401 / 403 otherwise."""
    api_key = request.header("x-api-key")
    tenant = await svc.tenants.authenticate(api_key) if api_key else None
    if tenant is None:
        raise unauthenticated()
    return active(tenant)


def caller_key_id(request: ApiRequest) -> str | None:
    """The id (public part) of the API key in `x-api-key`; call after `caller` has authenticated it."""
    from shared.services.tenants import API_KEY

    match = API_KEY.match((request.header("x-api-key") or "").strip())
    return match.group("key_id") if match else None


def active(tenant: Tenant) -> Tenant:
    if tenant.status != "active":
        raise ProblemDetails(403, "Tenant suspended", f"tenant {tenant.id} is suspended")
    return tenant


def is_operator(svc: Services, request: ApiRequest) -> bool:
    """The operator key in `x-operator-key`, or (only with TENANTFLOW_TRUST_EASY_AUTH=true, i.e. behind App Service
    Authentication) a principal holding the app role Tenantflow.Operator."""
    from shared.services.dashboard_access import easy_auth_principal

    given = request.header("x-operator-key")
    operator_key = svc.settings.operator_key
    if given and operator_key is not None and operator_key.reveal():
        return hmac.compare_digest(given.encode(), operator_key.reveal().encode())
    principal = easy_auth_principal(request.headers, svc.settings.trust_easy_auth)
    return principal is not None and principal.operator


def require_operator(svc: Services, request: ApiRequest) -> None:
    if not is_operator(svc, request):
        raise ProblemDetails(401, "Unauthenticated", "missing or invalid operator key (x-operator-key), and no "
                             "Easy Auth principal with the app role Tenantflow.Operator",
                             headers={"www-authenticate": 'ApiKey header="x-operator-key"'})


def signature_parts(header: str) -> tuple[str, str]:
    """(t, v1) of an `x-tenantflow-signature` header; empty strings for missing parts."""
    if len(header) > MAX_SIGNATURE_HEADER:
        return "", ""
    parts = dict(p.strip().split("=", 1) for p in header.split(",") if "=" in p)
    return parts.get("t", ""), parts.get("v1", "")


async def webhook_tenant(svc: Services, request: ApiRequest, tenant_id: str) -> Tenant:
    """The active tenant whose webhook secret signed this request; 401 / 403 otherwise."""
    from shared.services.tenants import WebhookRefused

    stamp, signature = signature_parts(request.header("x-tenantflow-signature") or "")
    try:
        tenant = await svc.tenants.verify_webhook(tenant_id, stamp, signature, request.body)
    except WebhookRefused as exc:
        raise unauthenticated(str(exc)) from None
    return active(tenant)
