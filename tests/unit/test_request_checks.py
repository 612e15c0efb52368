"""Request checks: every malformed input of issue 11 §5 is a RequestCheckError with a 4xx status, never a crash."""

from __future__ import annotations

import json

import pytest

from shared.functions.request_checks import (
    RequestCheckError,
    check_flow_id,
    check_run_id,
    check_tenant_segment,
    json_depth,
    parse_json_body,
    parse_webhook_signature,
)

HEX = "ab" * 32


@pytest.mark.parametrize("raw, status, message", [
    (b"[" * 10_000 + b"]" * 10_000, 400, "nested deeper than 64 levels"),
    (b'{"a": ' * 5_000 + b"1" + b"}" * 5_000, 400, "nested deeper than 64 levels"),
    (b'{"n": ' + b"9" * 4301 + b"}", 400, "more than 4300 digits"),
    (b'{"n": -' + b"9" * 5000 + b"}", 400, "more than 4300 digits"),
    (b'{"\\ud800": 1}', 400, "lone UTF-16 surrogate"),
    (b'{"a": ["x", "\\udfff"]}', 400, "lone UTF-16 surrogate"),
    (b'{"a": NaN}', 400, "NaN is not a JSON number"),
    (b'{"a": 1e999}', 400, "out of range"),
    (b'{"a": 1', 400, "not valid JSON: Expecting"),
    (b"\xff\xfe", 400, "not UTF-8"),
    (b" " * (1024 * 1024 + 1), 413, "over 1048576 bytes"),
])
def test_malformed_bodies_are_4xx(raw, status, message):
    with pytest.raises(RequestCheckError) as caught:
        parse_json_body(raw)
    assert caught.value.status == status and caught.value.field == "body" and message in caught.value.message


def test_good_bodies_parse_including_brackets_inside_strings():
    body = {"inputs": {"text": "[[[{{{ \\\" ]", "n": int("9" * 4300), "deep": [[[[1]]]], "ok": "\u00e9\U0001f600"}}
    assert parse_json_body(json.dumps(body).encode()) == body
    assert parse_json_body(b"") is None and parse_json_body(b"  \n") is None
    assert json_depth('{"a": "[[[[", "b": [{"c": []}]}') == 4


@pytest.mark.parametrize("header, message", [
    ("t=\u00b2,v1=" + HEX, "t must be 1-12 ASCII digits"),
    ("t=" + "1" * 5000 + ",v1=" + HEX, "must be t=<unix seconds>"),  # over 1 KiB
    ("t=" + "1" * 13 + ",v1=" + HEX, "t must be 1-12 ASCII digits"),
    ("t=\u0661\u0662,v1=" + HEX, "t must be 1-12 ASCII digits"),  # Arabic-Indic digits
    ("t=-5,v1=" + HEX, "t must be 1-12 ASCII digits"),
    ("t=1,t=2,v1=" + HEX, "t must be 1-12 ASCII digits"),
    ("t=1,v1=xyz", "v1 must be 64 hex digits"),
    ("t=1", "must be t=<unix seconds>"),
    ("v1=" + HEX, "must be t=<unix seconds>"),
    ("garbage", "must be t=<unix seconds>"),
    (None, "must be t=<unix seconds>"),
])
def test_bad_webhook_signatures_are_401(header, message):
    with pytest.raises(RequestCheckError) as caught:
        parse_webhook_signature(header)
    assert caught.value.status == 401 and caught.value.field == "x-tenantflow-signature"
    assert message in caught.value.message


def test_a_good_webhook_signature_parses():
    parsed = parse_webhook_signature(f"t=1767225600, v1={HEX.upper()},v1={'0' * 64}")
    assert (parsed.stamp, parsed.seconds, parsed.signatures) == ("1767225600", 1767225600, (HEX, "0" * 64))


@pytest.mark.parametrize("check, value", [
    (check_flow_id, "evil.yaml\x00"), (check_flow_id, "a" * 10_000), (check_flow_id, "../x"), (check_flow_id, ""),
    (check_flow_id, "a/b"), (check_run_id, "r\x00"), (check_run_id, "a" * 129), (check_run_id, "x y"),
    (check_tenant_segment, "acme\x00"), (check_tenant_segment, "Acme"), (check_tenant_segment, "acme\n"),
    (check_tenant_segment, "a" * 64), (check_run_id, None),
])
def test_impossible_path_segments_are_404(check, value):
    with pytest.raises(RequestCheckError) as caught:
        check(value)
    assert caught.value.status == 404 and "\x00" not in str(caught.value) and len(str(caught.value)) < 100


def test_possible_path_segments_pass():
    assert check_flow_id("support-reply") == "support-reply"
    assert check_run_id("0f" * 16) == "0f" * 16 and check_run_id("sched:2026-01-01T00.00") == "sched:2026-01-01T00.00"
    assert check_tenant_segment("contoso-1") == "contoso-1"


def test_service_id_rules_refuse_a_trailing_newline():
    from shared.services.credentials import API_VERSION, CREDENTIAL_NAME, FIELD_NAME
    from shared.services.tenants import API_KEY, KEY_ID, TenantError, check_tenant_id

    with pytest.raises(TenantError):
        check_tenant_id("acme\n")
    assert check_tenant_id("acme") == "acme"
    for pattern, good in ((KEY_ID, "0123456789ab"), (API_KEY, "tf_0123456789ab_" + "x" * 20),
                          (CREDENTIAL_NAME, "foundry"), (FIELD_NAME, "region"), (API_VERSION, "2024-10-21")):
        assert pattern.match(good) and not pattern.match(good + "\n")
