"""The `tenantflow` command line, end to end in subprocesses: SQLite store + the emulator over HTTP."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

import pytest

CANARY = "sk-cli-canary-5f1e0c"


@pytest.fixture
def cli(tmp_path, emulator):
    env = {**os.environ, "TENANTFLOW_STORE": "sqlite", "TENANTFLOW_SQLITE_PATH": str(tmp_path / "cli.db"),
           "TENANTFLOW_ALLOWED_HOSTS": "127.0.0.1", "TENANTFLOW_DEFAULT_ENDPOINT": emulator.base_url,
           "TENANTFLOW_ENCRYPTION_KEY": "k1:" + base64.b64encode(os.urandom(32)).decode()}
    env.pop("TENANTFLOW_FLOWS_DIR", None)

    def run(*args: str, stdin: str | None = None, env_extra: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "shared.cli", *args], input=stdin,
                                env={**env, **(env_extra or {})}, capture_output=True, text=True, timeout=60)
        assert "Traceback" not in result.stderr, result.stderr
        return result

    return run


def test_validate_exit_codes_and_messages(cli):
    ok = cli("validate")
    assert ok.returncode == 0 and "support-reply.yaml: ok" in ok.stdout
    bad = cli("validate", "tests/flows/invalid/unknown_field.yaml", "flows/support-reply.yaml")
    assert bad.returncode == 2
    assert "tests/flows/invalid/unknown_field.yaml:7: step a: field temprature: unknown field" in bad.stderr
    assert "1 of 2 flow files invalid" in bad.stderr


def test_tenant_credential_and_run_lifecycle(cli, emulator):
    added = cli("tenants", "add", "contoso", "--name", "Contoso Ltd")
    assert added.returncode == 0
    api_key = added.stdout.strip().splitlines()[-1]
    assert api_key.startswith("tf_") and len(api_key) > 40
    assert "contoso" in cli("tenants", "list").stdout

    refused = cli("credentials", "set", "contoso", "foundry", "--kind", "azure_openai", "--endpoint",
                  "https://169.254.169.254", "--api-key-stdin", stdin=CANARY + "\n")
    assert refused.returncode == 2 and "metadata" in refused.stderr and CANARY not in refused.stderr
    assert cli("credentials", "list", "contoso").stdout.strip() == ""

    saved = cli("credentials", "set", "contoso", "foundry", "--kind", "azure_openai", "--endpoint",
                emulator.base_url, "--api-key-stdin", stdin=CANARY + "\n")
    assert saved.returncode == 0, saved.stderr
    listed = cli("credentials", "list", "contoso")
    assert "api_key=******" in listed.stdout and CANARY not in listed.stdout

    run = cli("run", "support-reply", "--tenant", "contoso", "--input", "ticket=Where is my order?", "--json")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert set(result) >= {"run_id", "tenant", "flow", "status", "outputs", "error", "usage", "steps"}
    assert (result["tenant"], result["flow"], result["status"], result["error"]) == (
        "contoso", "support-reply", "succeeded", None)
    assert result["outputs"]["reply"].startswith("[gpt-4o-mini] Re: Where is my order?")
    assert result["usage"]["total_tokens"] == result["outputs"]["tokens"] > 0
    assert isinstance(result["usage"]["cost"], str)
    assert [s["id"] for s in result["steps"]] == ["creds", "connect", "draft"]
    assert all({"id", "status", "duration_ms", "usage"} <= set(s) for s in result["steps"])
    assert CANARY not in run.stdout + run.stderr

    missing = cli("run", "support-reply", "--tenant", "contoso")
    assert missing.returncode == 2 and "inputs.ticket: required input missing" in missing.stderr

    failed = cli("run", "grounded-answer", "--tenant", "contoso", "--input", "question=q", "--input",
                 "passages=not json")
    assert failed.returncode == 2 and "inputs.passages" in failed.stderr

    assert cli("tenants", "suspend", "contoso").returncode == 0
    suspended = cli("run", "support-reply", "--tenant", "contoso", "--input", "ticket=x")
    assert suspended.returncode == 2 and "suspended" in suspended.stderr


def test_failed_run_exits_1_and_unknown_tenant_exits_2(cli):
    cli("tenants", "add", "fabrikam")
    failed = cli("run", "support-reply", "--tenant", "fabrikam", "--input", "ticket=hi", "--json")
    assert failed.returncode == 1
    result = json.loads(failed.stdout)
    assert result["status"] == "failed" and "fabrikam has no credential" in result["error"]
    assert cli("run", "no-such-flow", "--tenant", "fabrikam").returncode == 2


def test_first_local_run_adds_the_tenant_to_the_embedded_store(cli):
    unknown_flow = cli("run", "no-such-flow", "--tenant", "newcomer")
    assert unknown_flow.returncode == 2 and "newcomer" not in cli("tenants", "list").stdout
    first = cli("run", "triage-batch", "--tenant", "newcomer", "--input", 'tickets=["Server down!"]', "--json")
    assert first.returncode == 0, first.stderr
    assert "tenant 'newcomer' was not in the local store; added it" in first.stderr
    assert json.loads(first.stdout)["outputs"]["labels"] == [{"ticket": "Server down!", "label": "urgent"}]
    assert "newcomer" in cli("tenants", "list").stdout
    again = cli("run", "triage-batch", "--tenant", "newcomer", "--input", "tickets=[]")
    assert again.returncode == 0 and "added it" not in again.stderr


def test_running_an_invalid_flow_by_name_shows_why(cli, tmp_path):
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "broken.yaml").write_text("id: broken\nsteps:\n  - id: a\n    kind: chat_completion\n")
    cli("tenants", "add", "contoso")
    result = cli("run", "broken", "--tenant", "contoso", env_extra={"TENANTFLOW_FLOWS_DIR": str(flows)})
    assert result.returncode == 2
    assert "broken.yaml:3: step a: field model: missing required field" in result.stderr
