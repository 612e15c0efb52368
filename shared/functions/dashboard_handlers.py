"""GET /api/dashboard — the usage dashboard a person opens in a browser.

Who may look, tried in this order:
1. `x-operator-key` (the operator: every tenant, or one with ?tenant=);
2. `x-api-key` (that key's tenant);
3. the `tf_dashboard` cookie a signed link left (`tenantflow dashboard-link`; one tenant, or all with --operator);
4. App Service Authentication (`x-ms-client-principal`, only with TENANTFLOW_TRUST_EASY_AUTH=true): the tenants the
   principal is a member of (`tenantflow tenants members add`), every tenant with the app role Tenantflow.Operator.

Opening a link (`?token=…`) trades it for that cookie (HttpOnly, SameSite=Strict, Secure on https) and redirects
(303) to the same URL without the token. The page's exports are this route too (`?format=csv|json&group_by=…`), so
they work with whatever let the page open. A refusal is an HTML page for a browser (Accept: text/html) and problem
details otherwise."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date
from decimal import Decimal
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from shared.functions.api_messages import ApiRequest, ApiResponse
from shared.functions.http_auth import active, caller, is_operator
from shared.functions.http_handlers import checked, summary_response, usage_query
from shared.functions.problems import ProblemDetails
from shared.functions.request_checks import check_run_id, check_tenant_segment

if TYPE_CHECKING:
    from shared.bootstrap import Services
    from shared.storage.models import Tenant
    from shared.web.dashboard import DashboardView, RunView

RECENT_RUNS = 20
RANKED_TENANTS_WITH_RUNS = 5  # the operator's all-tenants page lists recent runs of the most expensive tenants
TENANT_GROUPS = ("day", "key", "flow", "model")


@dataclass(frozen=True)
class Viewer:
    """Who is looking: the operator (every tenant), or the tenants it may see."""

    operator: bool
    tenants: tuple[str, ...] = ()


def wants_html(request: ApiRequest) -> bool:
    return "text/html" in (request.header("accept") or "")


def is_https(request: ApiRequest) -> bool:
    forwarded = (request.header("x-forwarded-proto") or "").split(",")[0].strip().lower()
    return request.scheme == "https" or forwarded == "https"


def page_path(request: ApiRequest) -> str:
    """This route's path, for the redirect, the form and the page's links: always one leading slash (`//host/…`
    would send the browser to another site)."""
    return "/" + request.path.lstrip("/")


def refused(request: ApiRequest, problem: ProblemDetails) -> ApiResponse:
    """The refusal as an HTML page for a browser; problem details (raised) otherwise."""
    if not wants_html(request):
        raise problem
    from shared.web.dashboard import render_unauthorized

    return ApiResponse(problem.status, render_unauthorized(problem.detail).encode(),
                       {"content-type": "text/html; charset=utf-8", "cache-control": "no-store"})


async def dashboard(svc: Services, request: ApiRequest) -> ApiResponse:
    """The page, an export of it (`format`), or one run's drill-down (`run`); see the module doc."""
    if "token" in request.query:
        return open_link(svc, request)
    try:
        viewer = await dashboard_viewer(svc, request)
        shown = await picked_tenant(svc, request, viewer)
    except ProblemDetails as problem:
        return refused(request, problem)
    tenant = shown.id if shown else None
    if request.query.get("format"):
        groups = TENANT_GROUPS + (("tenant",) if tenant is None else ())
        query = usage_query(request, tenant, groups)
        return summary_response(await svc.usage.summary(query), request)
    try:
        view = await dashboard_view(svc, request, viewer, shown)
    except ProblemDetails as problem:
        return refused(request, problem)
    from shared.web.dashboard import render_dashboard

    return ApiResponse(200, render_dashboard(view).encode(),
                       {"content-type": "text/html; charset=utf-8", "cache-control": "no-store"})


def link_keys(svc: Services) -> list[bytes]:
    """Every configured encryption key: a link signed under any of them opens the page (key rotation)."""
    return [k.key for k in svc.settings.encryption_keys]


def open_link(svc: Services, request: ApiRequest) -> ApiResponse:
    """`?token=…`: a valid link becomes the session cookie and a 303 to the clean URL; any other is a 401."""
    from shared.services.dashboard_access import DashboardLinkError, session_cookie, verify_dashboard_token

    now = svc.clock.now()
    token = request.query.get("token") or ""
    try:
        scope = verify_dashboard_token(token, link_keys(svc), now)
    except DashboardLinkError as exc:
        return refused(request, ProblemDetails(401, "Unauthenticated", f"{exc}; ask for a new link",
                                               kind="dashboard-link", reason=exc.reason))
    rest = {k: v for k, v in request.query.items() if k != "token"}
    location = page_path(request) + (f"?{urlencode(rest)}" if rest else "")
    return ApiResponse(303, b"", {"location": location, "cache-control": "no-store",
                                  "set-cookie": session_cookie(token, scope, now, secure=is_https(request))})


async def dashboard_viewer(svc: Services, request: ApiRequest) -> Viewer:
    """Raises ProblemDetails 401 (no or bad credentials) / 403 (suspended, or a principal of no tenant)."""
    from shared.services.dashboard_access import (
        DashboardLinkError,
        easy_auth_principal,
        token_from_cookies,
        verify_dashboard_token,
    )

    if is_operator(svc, request):
        return Viewer(operator=True)
    if request.header("x-api-key"):
        return Viewer(False, ((await caller(svc, request)).id,))
    link_error = None
    token = token_from_cookies(request.header("cookie"))
    if token:
        try:
            scope = verify_dashboard_token(token, link_keys(svc), svc.clock.now())
            return Viewer(scope.operator, (scope.tenant,) if scope.tenant else ())
        except DashboardLinkError as exc:
            link_error = f"{exc}; ask for a new link"
    principal = easy_auth_principal(request.headers, svc.settings.trust_easy_auth)
    if principal is not None:
        if principal.operator:
            return Viewer(operator=True)
        from shared.services.members import TenantMembers

        tenants = await TenantMembers(svc.stores.tenants, svc.stores.members).tenants_for(principal)
        if not tenants:
            raise ProblemDetails(403, "Forbidden", f"{principal.name or principal.object_id or 'you'} is not a "
                                 "member of any tenant (an operator adds you: tenantflow tenants members add)")
        return Viewer(False, tuple(tenants))
    raise ProblemDetails(401, "Unauthenticated", link_error or "no credentials: open a dashboard link "
                         "(tenantflow dashboard-link TENANT), sign in, or send x-api-key")


async def picked_tenant(svc: Services, request: ApiRequest, viewer: Viewer) -> Tenant | None:
    """The tenant shown: ?tenant= among those the viewer may see (the operator: any, or None for all); else the
    viewer's first. A tenant the viewer may not see is as unknown as a missing one (404)."""
    wanted = request.query.get("tenant") or None
    if wanted is not None:
        wanted = checked(lambda: check_tenant_segment(wanted))
    if viewer.operator and wanted is None:
        return None
    if not viewer.operator and wanted is not None and wanted not in viewer.tenants:
        raise ProblemDetails(404, "Not found", f"no tenant {wanted!r}")
    tenant_id = wanted or viewer.tenants[0]
    tenant = await svc.stores.tenants.get(tenant_id)
    if tenant is None:
        raise ProblemDetails(404, "Not found", f"no tenant {tenant_id!r}")
    return tenant if viewer.operator else active(tenant)


async def dashboard_view(svc: Services, request: ApiRequest, viewer: Viewer, shown: Tenant | None) -> DashboardView:
    """The page's view model, from the usage read model, the budget and the run history."""
    from shared.storage.ports import GROUP_KEYS
    from shared.web.dashboard import (
        BudgetView,
        DashboardView,
        DayUsage,
        TenantChoice,
        decimal_or_none,
        export_links,
        fill_days,
        run_view,
        usage_line,
    )

    tenant = shown.id if shown else None
    today = svc.clock.now().astimezone(UTC).date()
    query = usage_query(request, tenant, GROUP_KEYS, default_from=today.replace(day=1).isoformat(),
                        default_to=today.isoformat())
    assert query.start is not None and query.end is not None
    start, end, page = query.start, query.end, page_path(request)
    period = {"from": start.isoformat(), "to": end.isoformat()}
    groups = TENANT_GROUPS + (("tenant",) if tenant is None else ())
    summaries = {group: await svc.usage.summary(replace(query, group_by=group)) for group in groups}
    lines = {group: tuple(usage_line(row[group], row) for row in summaries[group]["rows"]) for group in groups}
    ranked = tuple(sorted(lines.get("tenant", ()), key=lambda line: line.cost or Decimal(0), reverse=True))
    ranked = tuple(replace(line, href=f"{page}?{urlencode({'tenant': line.label, **period})}") for line in ranked)
    if viewer.operator:
        choices = tuple(TenantChoice(t.id, t.name) for t in sorted(await svc.stores.tenants.list(), key=lambda t: t.id))
    elif len(viewer.tenants) > 1:
        found = [await svc.stores.tenants.get(t) for t in viewer.tenants]
        choices = tuple(TenantChoice(t.id, t.name) for t in found if t is not None)
    else:
        choices = ()

    def run_href(run_tenant: str, run_id: str) -> str:
        return f"{page}?{urlencode({'tenant': run_tenant, 'run': run_id, **period})}#run"

    shown_tenants = [tenant] if tenant else [line.label for line in ranked[:RANKED_TENANTS_WITH_RUNS]]
    runs = sorted([run for t in shown_tenants for run in await svc.stores.runs.list(t, RECENT_RUNS)],
                  key=lambda r: r.created_at, reverse=True)[:RECENT_RUNS]
    selected = await selected_run(svc, request, tenant)
    status = await svc.usage.budget_status(tenant) if tenant else None
    day_rows = [DayUsage(date.fromisoformat(row["day"]), line.prompt_tokens, line.completion_tokens,
                         line.total_tokens, line.cost, line.runs)
                for row in summaries["day"]["rows"] for line in [usage_line(row["day"], row)]]
    return DashboardView(
        title=f"Usage of {shown.name}" if shown else "Usage of all tenants",
        start=start, end=end, today=today, currency=svc.prices.currency, operator=viewer.operator, tenant=tenant,
        totals=usage_line("total", summaries["day"]["totals"]), days=fill_days(start, end, day_rows),
        by_key=lines["key"], by_flow=lines["flow"], by_model=lines["model"],
        budget=BudgetView(status["period"], status["reset"], status["monthly_tokens"],
                          decimal_or_none(status["monthly_cost"]), int(status["used_tokens"]),
                          decimal_or_none(status["used_cost"])) if status else None,
        tenants=choices, tenants_by_cost=ranked,
        recent_runs=tuple(run_view(run, run_href(run.tenant_id, run.run_id)) for run in runs),
        selected_run=selected, exports=export_links(page, start, end, groups, tenant), page_path=page)


async def selected_run(svc: Services, request: ApiRequest, tenant: str | None) -> RunView | None:
    """`?run=ID`: that run of the tenant shown, for the drill-down; another tenant's is as unknown as a missing one."""
    if not request.query.get("run"):
        return None
    from shared.web.dashboard import run_view

    run_id = checked(lambda: check_run_id(request.query.get("run")))
    run = await svc.runs.find(tenant, run_id) if tenant else None
    if run is None:
        raise ProblemDetails(404, "Not found", "no such run for this tenant")
    return run_view(run)

