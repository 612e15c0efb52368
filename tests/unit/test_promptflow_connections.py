"""Prompt flow connection YAML → credential fields: placeholders, ${env:…}, types, file:line errors."""

from __future__ import annotations

import pytest

from shared.promptflow.connections import ConnectionImportError, read_connection


def read(tmp_path, text, env=None, lines=()):
    path = tmp_path / "conn.yaml"
    path.write_text(text)
    pending = list(lines)
    return read_connection(path, env or {}, lambda: pending.pop(0) if pending else ""), path


def test_azure_open_ai_with_a_placeholder_key_from_stdin(tmp_path):
    credential, _ = read(tmp_path, "name: aoai\ntype: azure_open_ai\napi_key: <user-input>\n"
                         "api_base: https://contoso.openai.azure.com\napi_version: 2024-10-21\n", lines=["sk-1\n"])
    assert (credential.name, credential.kind, credential.endpoint, credential.api_version) == (
        "aoai", "azure_openai", "https://contoso.openai.azure.com", "2024-10-21")
    assert credential.api_key.reveal() == "sk-1" and not credential.entra


def test_entra_needs_no_key_and_open_ai_keeps_its_organization(tmp_path):
    entra, _ = read(tmp_path, "name: e\ntype: azure_open_ai\napi_base: https://x.openai.azure.com\n"
                    "auth_mode: meid_token\n")
    assert entra.entra and entra.api_key is None
    openai, _ = read(tmp_path, "name: o\ntype: open_ai\napi_key: ${env:OPENAI_KEY}\norganization: org-1\n",
                     env={"OPENAI_KEY": "sk-o"})
    assert openai.api_key.reveal() == "sk-o" and openai.configs == {"organization": "org-1"}


def test_custom_configs_and_secrets_become_field_names(tmp_path):
    custom, _ = read(tmp_path, "name: c\ntype: custom\nconfigs:\n  Index-Name: docs\nsecrets:\n"
                     "  api-key: <to-be-replaced>\n  admin-token: <user-input>\n", lines=["k1", "t1"])
    assert custom.configs == {"index_name": "docs"} and custom.api_key.reveal() == "k1"
    assert {k: v.reveal() for k, v in custom.secrets.items()} == {"admin_token": "t1"}


@pytest.mark.parametrize("text,message", [
    ("name: a\ntype: serp\n", ":2: type must be one of azure_open_ai, open_ai, custom, got 'serp'"),
    ("type: open_ai\napi_key: k\n", ":1: a connection needs a `name`"),
    ("name: a\ntype: open_ai\napi_key: <user-input>\n", ":3: api_key: a placeholder; no value for it on standard"),
    ("name: a\ntype: open_ai\napi_key: ${env:MISSING}\n", ":3: api_key: environment variable MISSING is not set"),
    ("name: a\ntype: open_ai\napi_key: sk-${env:X}\n", ":3: api_key: write ${env:NAME} or <user-input> alone"),
    ("name: a\ntype: azure_open_ai\napi_key: k\napi_base: <your endpoint>\n", ":4: api_base: <your endpoint> is a "
     "placeholder; write the value or ${env:NAME}"),
    ("name: a\ntype: open_ai\napi_key: [k\n", ":4: YAML syntax error"),
])
def test_bad_files_name_file_and_line(tmp_path, text, message):
    with pytest.raises(ConnectionImportError) as caught:
        read(tmp_path, text, env={"X": "secret-x"})
    assert str(caught.value).startswith(str(tmp_path / "conn.yaml")) and message in str(caught.value)
    assert "secret-x" not in str(caught.value)
