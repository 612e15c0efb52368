"""Dashboard links (signed, expiring, read-only) and the Easy Auth principal parser — pure."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from shared.services.dashboard_access import (
    DashboardLinkError,
    DashboardScope,
    b64url,
    dashboard_url,
    easy_auth_principal,
    parse_client_principal,
    parse_ttl,
    principal_header,
    sign_dashboard_token,
    unb64url,
    verify_dashboard_token,
)

KEY, OTHER = b"k" * 32, b"o" * 32
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
ROLE = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"


def test_a_link_grants_one_tenant_until_it_expires():
    token = sign_dashboard_token(KEY, "contoso", False, NOW + timedelta(hours=1))
    assert verify_dashboard_token(token, [KEY], NOW) == DashboardScope("contoso", False, NOW + timedelta(hours=1))
    with pytest.raises(DashboardLinkError) as expired:
        verify_dashboard_token(token, [KEY], NOW + timedelta(hours=1))
    assert expired.value.reason == "expired" and "expired at 2026-12-03 13:00 UTC" in str(expired.value)


def test_an_operator_link_grants_every_tenant():
    token = sign_dashboard_token(KEY, "ignored", True, NOW + timedelta(minutes=5))
    assert verify_dashboard_token(token, [KEY], NOW) == DashboardScope(None, True, NOW + timedelta(minutes=5))


def test_a_changed_or_foreign_link_is_tampered():
    token = sign_dashboard_token(KEY, "contoso", False, NOW + timedelta(hours=1))
    version, payload, signature = token.split(".")
    widened = json.loads(unb64url(payload)) | {"t": "fabrikam"}
    forged = f"{version}.{b64url(json.dumps(widened).encode())}.{signature}"
    made_operator = f"{version}.{b64url(json.dumps({'t': None, 'op': True, 'exp': 2**40}).encode())}.{signature}"
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    for bad in (forged, made_operator, flipped, sign_dashboard_token(OTHER, "contoso", False, NOW + timedelta(1))):
        with pytest.raises(DashboardLinkError) as caught:
            verify_dashboard_token(bad, [KEY], NOW)
        assert caught.value.reason == "tampered"
    for malformed in ("", "abc", "v1.a.b.c", "v2.x.y", "v1.eyJ9.!!!", "x" * 5000):
        with pytest.raises(DashboardLinkError) as caught:
            verify_dashboard_token(malformed, [KEY], NOW)
        assert caught.value.reason in ("malformed", "tampered")


def test_links_survive_a_key_rotation_while_the_old_key_is_configured():
    token = sign_dashboard_token(OTHER, "contoso", False, NOW + timedelta(hours=1))
    assert verify_dashboard_token(token, [KEY, OTHER], NOW).tenant == "contoso"


@pytest.mark.parametrize(("text", "seconds"), [("1h", 3600), ("30m", 1800), ("90", 90), ("7d", 604800),
                                               ("2w", 1209600), (" 45S ", 45)])
def test_ttl(text, seconds):
    assert parse_ttl(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["0h", "32d", "1y", "-1h", "h", ""])
def test_bad_ttl(text):
    with pytest.raises(ValueError, match="--ttl"):
        parse_ttl(text)


def test_dashboard_url():
    assert dashboard_url("https://func-x.azurewebsites.net/", "v1.a.b") == \
        "https://func-x.azurewebsites.net/api/dashboard?token=v1.a.b"
    assert dashboard_url("http://127.0.0.1:7071/api", "v1.a-_.b") == "http://127.0.0.1:7071/api/dashboard?token=v1.a-_.b"
    with pytest.raises(ValueError, match="--base-url"):
        dashboard_url("func-x.azurewebsites.net", "t")


def test_easy_auth_principal_and_operator_role():
    header = principal_header([
        {"typ": "name", "val": "ann@contoso.com"},
        {"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": "0f1e-oid"},
        {"typ": "roles", "val": "Tenantflow.Operator"}, {"typ": ROLE, "val": "Reader"}])
    principal = parse_client_principal(header)
    assert principal is not None and principal.operator and principal.identity_provider == "aad"
    assert principal.ids == ("0f1e-oid", "ann@contoso.com") and principal.roles == ("Tenantflow.Operator", "Reader")
    member = parse_client_principal(principal_header([{"typ": "name", "val": "bob@fabrikam.com"}]))
    assert member is not None and not member.operator and member.ids == ("bob@fabrikam.com",)
    assert easy_auth_principal({"x-ms-client-principal": header}, trust_easy_auth=False) is None
    assert easy_auth_principal({"x-ms-client-principal": header}, trust_easy_auth=True) == principal
    assert easy_auth_principal({}, trust_easy_auth=True) is None


@pytest.mark.parametrize("header", ["", "not base64 !", base64.b64encode(b"[1, 2]").decode(),
                                    base64.b64encode(b'{"claims": "x"}').decode(), "e" * 20000])
def test_malformed_principal_headers_are_ignored(header):
    assert parse_client_principal(header) is None


def test_the_cookie_a_link_is_traded_for():
    from shared.services.dashboard_access import session_cookie, token_from_cookies

    token = sign_dashboard_token(KEY, "contoso", False, NOW + timedelta(hours=1))
    scope = verify_dashboard_token(token, [KEY], NOW)
    cookie = session_cookie(token, scope, NOW, secure=True)
    assert cookie == f"tf_dashboard={token}; Path=/api; Max-Age=3600; HttpOnly; SameSite=Strict; Secure"
    assert "Secure" not in session_cookie(token, scope, NOW, secure=False)
    assert token_from_cookies(f"other=1; tf_dashboard={token}; x=y") == token
    assert token_from_cookies("other=1") is None and token_from_cookies(None) is None


def test_the_unauthorized_page_escapes_the_reason():
    from shared.web.dashboard import render_unauthorized

    page = render_unauthorized('the dashboard link expired <b>"now"</b>')
    assert 'data-page="unauthorized"' in page and "&lt;b&gt;&quot;now&quot;&lt;/b&gt;" in page and "<b>" not in page


def test_trust_easy_auth_setting():
    from shared.settings import Settings, SettingsError

    assert Settings.from_env({}).trust_easy_auth is False
    assert Settings.from_env({"TENANTFLOW_TRUST_EASY_AUTH": "TRUE"}).trust_easy_auth is True
    with pytest.raises(SettingsError, match="TENANTFLOW_TRUST_EASY_AUTH: must be true or false, got 'yes'"):
        Settings.from_env({"TENANTFLOW_TRUST_EASY_AUTH": "yes"})
