"""Route templates of the HTTP functions, as the Functions host reads them.

The host refuses (puts in error, answering 404) every function whose route, trimmed of `/` and lower-cased, starts
with `admin` or `runtime` — whatever the `api` route prefix — because its own management API lives there
(azure-functions-host `ScriptHost.ValidateHttpFunction`). The operator routes keep their public path `/api/admin/…`
by starting with a route parameter constrained to that one word instead: `{area:regex(^admin$)}/tenants` matches
`/api/admin/tenants` and nothing else, and passes the host's check.
"""

from __future__ import annotations

import re

ADMIN = "{area:regex(^admin$)}"  # the `admin` path segment, as a route template may start with it
RESERVED_BY_HOST = ("admin", "runtime")
LITERAL_PARAMETER = re.compile(r"\{\w+:regex\(\^([A-Za-z0-9_-]+)\$\)\}")


def reserved_by_host(route: str) -> bool:
    """True for a route template the Functions host refuses (see above)."""
    return route.strip("/").lower().startswith(RESERVED_BY_HOST)


def plain_path(route: str) -> str:
    """The route template with each parameter constrained to one word written as that word (`{area:regex(^admin$)}/x`
    → `admin/x`): the public path `tenantflow serve` routes by."""
    return LITERAL_PARAMETER.sub(r"\1", route)
