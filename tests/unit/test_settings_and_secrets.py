"""Settings parsing (fail fast, naming the variable) and the Secret type (never prints)."""

from __future__ import annotations

import base64
import json
import logging
import pickle

import pytest

from shared.engine.errors import InputError
from shared.engine.inputs import coerce_inputs
from shared.engine.parser import parse_flow
from shared.engine.usage import TokenUsage
from shared.secret import MASK, Secret, SecretExposureError, mask_secrets, redact_text, secrets_refuse_text
from shared.services.usage import csv_cell
from shared.settings import Settings, SettingsError

KEY = base64.b64encode(bytes(range(32))).decode()
KEY_URL = base64.urlsafe_b64encode(bytes(range(1, 33))).decode().rstrip("=")


def test_defaults_are_the_embedded_sqlite_store():
    settings = Settings.from_env({})
    assert settings.store == "sqlite" and settings.default_endpoint == "http://127.0.0.1:8765"
    assert settings.encryption_keys == ()


@pytest.mark.parametrize("env,variable", [
    ({"TENANTFLOW_STORE": "mongo"}, "TENANTFLOW_STORE"),
    ({"TENANTFLOW_STORE": "postgres", "TENANTFLOW_ENCRYPTION_KEY": KEY}, "TENANTFLOW_POSTGRES_DSN"),
    ({"TENANTFLOW_STORE": "table", "TENANTFLOW_ENCRYPTION_KEY": KEY}, "TENANTFLOW_TABLE_CONNECTION"),
    ({"TENANTFLOW_STORE": "postgres", "TENANTFLOW_POSTGRES_DSN": "postgresql://x"}, "TENANTFLOW_ENCRYPTION_KEY"),
    ({"TENANTFLOW_ENCRYPTION_KEY": "c2hvcnQ="}, "TENANTFLOW_ENCRYPTION_KEY"),
    ({"TENANTFLOW_ENCRYPTION_KEY": "!!!"}, "TENANTFLOW_ENCRYPTION_KEY"),
    ({"TENANTFLOW_CREDENTIAL_CACHE_TTL": "soon"}, "TENANTFLOW_CREDENTIAL_CACHE_TTL"),
])
def test_bad_settings_fail_fast_naming_the_variable(env, variable):
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    assert str(caught.value).startswith(variable + ":")


def test_encryption_keys_with_ids_base64url_and_rotation_order():
    settings = Settings.from_env({"TENANTFLOW_ENCRYPTION_KEY": f"new:{KEY_URL}, old:{KEY}"})
    assert [k.kid for k in settings.encryption_keys] == ["new", "old"]
    assert settings.encryption_keys[1].key == bytes(range(32))
    assert KEY not in repr(settings)


def test_secret_never_prints(caplog):
    secret = Secret("sk-canary-123")
    assert str(secret) == MASK and repr(secret) == f"Secret({MASK})" and f"{secret}" == MASK
    assert json.dumps(mask_secrets({"k": [secret]})) == '{"k": ["******"]}'
    with caplog.at_level(logging.INFO):
        logging.getLogger("t").info("key=%s %r", secret, secret)
    assert "sk-canary-123" not in caplog.text
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    with secrets_refuse_text(), pytest.raises(SecretExposureError):
        str(secret)
    assert secret.reveal() == "sk-canary-123"


def test_inputs_are_coerced_from_cli_text_and_checked():
    flow = parse_flow("id: f\ninputs:\n  n: integer\n  x: number\n  ok: boolean\n  tags: list\n"
                      "  who: {type: string, required: true}\nsteps:\n  - {id: r, kind: return}\n")
    assert coerce_inputs(flow, {"n": "3", "x": "2.5", "ok": "yes", "tags": '["a"]', "who": "me"},
                         from_strings=True) == {"n": 3, "x": 2.5, "ok": True, "tags": ["a"], "who": "me"}
    with pytest.raises(InputError) as caught:
        coerce_inputs(flow, {"n": "three", "extra": 1}, from_strings=True)
    assert set(caught.value.errors) == {"inputs.n", "inputs.extra", "inputs.who"}
    with pytest.raises(InputError) as caught:
        coerce_inputs(flow, {"who": 5, "ok": "true"})
    assert caught.value.errors == {"inputs.who": "must be string, got an integer",
                                   "inputs.ok": "must be boolean, got a string"}


def test_token_usage_from_openai_shapes():
    usage = TokenUsage.from_openai({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
                                    "prompt_tokens_details": {"cached_tokens": 4},
                                    "completion_tokens_details": {"reasoning_tokens": 2}})
    assert usage == TokenUsage(10, 5, 15, 4, 2)
    assert TokenUsage.from_openai(None) == TokenUsage()
    assert (usage + usage).total_tokens == 30


ECHOED_KEY = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("text, expected", [
    (f"invalid key {ECHOED_KEY} given", "invalid key ****** given"),
    (f"echo: {ECHOED_KEY[:12]}...", "echo: ******..."),
    ("Authorization: Bearer abc.def-ghi", "Authorization: Bearer ******"),
    ("api-key=supersecret99 bad", "api-key=****** bad"),
    ("use sk-proj-ABCDEF123456 here", "use ****** here"),
    ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig end", "jwt ****** end"),
    ("x Q2xpZW50U2VjcmV0VmFsdWVIZXJlMTIz y", "x ****** y"),
    ("deployment gpt-4o-mini-2024-07-18 not found; internationalization", None),
    ("The model `text-embedding-3-large` does not exist", None),
])
def test_redact_text_removes_the_key_and_anything_key_like(text, expected):
    assert redact_text(text, (ECHOED_KEY,)) == (text if expected is None else expected)


@pytest.mark.parametrize("cell, written", [
    ("=1+1", "'=1+1"), ("+1", "'+1"), ("-1", "'-1"), ("@x", "'@x"), ("\tx", "'\tx"), ("\rx", "' x"),
    ("a\rb\nc", "a b c"), ("gpt-4o", "gpt-4o"), ("a=b", "a=b"), (None, ""), (12, "12"),
])
def test_csv_cells_never_start_a_formula(cell, written):
    assert csv_cell(cell) == written
