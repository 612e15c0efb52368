"""Who may see the dashboard, without an API key in a browser: signed links and App Service Authentication.

**Links** (`tenantflow dashboard-link T [--ttl 1h] [--base-url URL] [--operator]`): a read-only, expiring token
`v1.<payload>.<signature>` — payload base64url JSON `{"t": tenant or null, "op": operator?, "exp": unix seconds}`,
signature base64url HMAC-SHA256 over `v1.<payload>` under the **link key**. The link key is derived from the
encryption key (TENANTFLOW_ENCRYPTION_KEY, or the embedded store's local key file): HMAC-SHA256(encryption key,
"tenantflow dashboard link v1"). So there is no extra secret to store, a link made by the CLI verifies in the app
that shares its key, and every configured key is tried in turn: a link outlives a key rotation until it expires. An
operator link (`--operator`) shows all tenants.

**Easy Auth**: behind App Service Authentication the platform sends `x-ms-client-principal`, base64 JSON
`{auth_typ, name_typ, role_typ, claims: [{typ, val}]}`. It is honoured only when TENANTFLOW_TRUST_EASY_AUTH=true
(anyone can send the header to an app that is not behind Easy Auth). The app role `Tenantflow.Operator` gives
the operator view.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

TOKEN_VERSION = "v1"
LINK_KEY_LABEL = b"tenantflow dashboard link v1"
DEFAULT_TTL = timedelta(hours=1)
MAX_TTL = timedelta(days=31)
MAX_TOKEN_LENGTH = 1024
TTL = re.compile(r"^(?P<count>\d{1,7})(?P<unit>[smhdw]?)$")
TTL_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
OPERATOR_ROLE = "Tenantflow.Operator"
OBJECT_ID_CLAIMS = ("http://schemas.microsoft.com/identity/claims/objectidentifier", "oid")
ROLE_CLAIMS = ("roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role")
MAX_PRINCIPAL_HEADER = 16 * 1024


class DashboardLinkError(ValueError):
    """A link that does not open the dashboard. `reason`: malformed | tampered | expired."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class DashboardScope:
    """What a verified link (or principal) may see: one tenant, or every tenant for the operator."""

    tenant: str | None
    operator: bool
    expires_at: datetime | None = None


def link_key(encryption_key: bytes) -> bytes:
    return hmac.new(encryption_key, LINK_KEY_LABEL, hashlib.sha256).digest()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parse_ttl(text: str) -> timedelta:
    """`90s`, `30m`, `1h`, `7d`, `2w` or plain seconds; at most 31 days."""
    match = TTL.match(text.strip().lower()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"--ttl {text!r}: expected a number with s, m, h, d or w, e.g. 1h")
    ttl = timedelta(seconds=int(match["count"]) * TTL_UNITS[match["unit"]])
    if ttl <= timedelta(0) or ttl > MAX_TTL:
        raise ValueError(f"--ttl {text!r}: must be more than 0 and at most {MAX_TTL.days} days")
    return ttl


def sign_dashboard_token(encryption_key: bytes, tenant: str | None, operator: bool, expires_at: datetime) -> str:
    if not operator and not tenant:
        raise ValueError("a dashboard link is for one tenant, or for the operator")
    payload = {"t": None if operator else tenant, "op": operator, "exp": int(expires_at.timestamp())}
    body = f"{TOKEN_VERSION}.{b64url(json.dumps(payload, separators=(',', ':')).encode())}"
    signature = hmac.new(link_key(encryption_key), body.encode(), hashlib.sha256).digest()
    return f"{body}.{b64url(signature)}"


def verify_dashboard_token(token: str, encryption_keys: Iterable[bytes], now: datetime) -> DashboardScope:
    """The scope a token grants, or DashboardLinkError naming why not (the signature is checked before anything
    in the payload is believed; then the expiry)."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
        raise DashboardLinkError("malformed", "the dashboard link is malformed")
    version, payload_text, signature_text = token.split(".")
    if version != TOKEN_VERSION:
        raise DashboardLinkError("malformed", "the dashboard link has an unknown version")
    try:
        signature = unb64url(signature_text)
    except (binascii.Error, ValueError):
        raise DashboardLinkError("malformed", "the dashboard link is malformed") from None
    body = f"{version}.{payload_text}".encode()
    if not any(hmac.compare_digest(hmac.new(link_key(key), body, hashlib.sha256).digest(), signature)
               for key in encryption_keys):
        raise DashboardLinkError("tampered", "the dashboard link's signature does not match (changed, or not ours)")
    try:
        payload = json.loads(unb64url(payload_text))
        tenant, operator, expires = payload["t"], payload["op"], int(payload["exp"])
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise DashboardLinkError("malformed", "the dashboard link's payload is malformed") from None
    if not isinstance(operator, bool) or (not operator and not isinstance(tenant, str)):
        raise DashboardLinkError("malformed", "the dashboard link's payload is malformed")
    expires_at = datetime.fromtimestamp(expires, UTC)
    if now >= expires_at:
        raise DashboardLinkError("expired", f"the dashboard link expired at {expires_at:%Y-%m-%d %H:%M} UTC")
    return DashboardScope(None if operator else tenant, operator, expires_at)


def dashboard_url(base_url: str, token: str) -> str:
    """`<base>/api/dashboard?token=…`; the base is the app's URL without `/api` (a trailing `/api` is tolerated)."""
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"--base-url {base_url!r}: expected http(s)://host[:port]")
    base = base_url.strip().rstrip("/")
    base = base[: -len("/api")] if base.endswith("/api") else base
    return f"{base}/api/dashboard?token={quote(token, safe='.-_')}"


# --- the cookie a link is traded for -------------------------------------------------------------------------------
COOKIE_NAME = "tf_dashboard"


def session_cookie(token: str, scope: DashboardScope, now: datetime, secure: bool) -> str:
    """The `Set-Cookie` value that keeps a verified link's token after the redirect to the clean URL: HttpOnly,
    SameSite=Strict, Secure on https, limited to /api, expiring with the link."""
    max_age = max(int((scope.expires_at - now).total_seconds()), 0) if scope.expires_at else 0
    return (f"{COOKIE_NAME}={token}; Path=/api; Max-Age={max_age}; HttpOnly; SameSite=Strict"
            + ("; Secure" if secure else ""))


def token_from_cookies(cookie_header: str | None) -> str | None:
    """The dashboard token in a request's `Cookie` header, if any."""
    for part in (cookie_header or "").split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name == COOKIE_NAME and value:
            return value
    return None


# --- Easy Auth -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClientPrincipal:
    """Who App Service Authentication says is calling."""

    identity_provider: str
    name: str | None
    object_id: str | None
    roles: tuple[str, ...]

    @property
    def operator(self) -> bool:
        return OPERATOR_ROLE in self.roles

    @property
    def ids(self) -> tuple[str, ...]:
        """The names a tenant membership may use for this principal: its object id and its name (UPN/email)."""
        return tuple(v for v in (self.object_id, self.name) if v)


def parse_client_principal(header: str | None) -> ClientPrincipal | None:
    """The principal in an `x-ms-client-principal` header, or None when it is absent or malformed."""
    if not header or len(header) > MAX_PRINCIPAL_HEADER:
        return None
    try:
        document = json.loads(base64.b64decode(header + "=" * (-len(header) % 4)))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(document, dict) or not isinstance(document.get("claims", []), list):
        return None
    name_type = document.get("name_typ") or "name"
    role_type = document.get("role_typ") or "roles"
    claims: list[tuple[str, str]] = [
        (c["typ"], c["val"]) for c in document.get("claims", [])
        if isinstance(c, dict) and isinstance(c.get("typ"), str) and isinstance(c.get("val"), str)]
    roles = tuple(dict.fromkeys(v for t, v in claims if t == role_type or t in ROLE_CLAIMS))
    return ClientPrincipal(
        identity_provider=str(document.get("auth_typ") or ""),
        name=next((v for t, v in claims if t == name_type), None),
        object_id=next((v for t, v in claims if t in OBJECT_ID_CLAIMS), None),
        roles=roles,
    )


def easy_auth_principal(headers: Mapping[str, str], trust_easy_auth: bool) -> ClientPrincipal | None:
    """The Easy Auth principal of a request (lower-case header names), only when TENANTFLOW_TRUST_EASY_AUTH=true."""
    if not trust_easy_auth:
        return None
    return parse_client_principal(headers.get("x-ms-client-principal"))


def principal_header(claims: list[dict[str, Any]], auth_type: str = "aad") -> str:
    """An `x-ms-client-principal` value, as the platform builds it (for local testing and the tests)."""
    document = {"auth_typ": auth_type, "name_typ": "name", "role_typ": "roles", "claims": claims}
    return base64.b64encode(json.dumps(document).encode()).decode()
