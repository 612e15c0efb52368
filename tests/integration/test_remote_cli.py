"""`tenantflow --url URL` against a real `tenantflow serve` process, and `tenantflow smoke` against it with the
emulator behind: the same commands print the same, locally and through the operator API, on one store."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.backends.pg_cluster import free_port
from tests.cli_runner import cli_runner

OPERATOR_KEY = "operator-key-remote-cli-3e9a"




@pytest.fixture
def served(tmp_path, monkeypatch, emulator):
    """`tenantflow serve` on a free port, on the SQLite store the in-process CLI uses too; yields its base URL."""
    env = {"TENANTFLOW_STORE": "sqlite", "TENANTFLOW_SQLITE_PATH": str(tmp_path / "remote.db"),
           "TENANTFLOW_ALLOWED_HOSTS": "127.0.0.1", "TENANTFLOW_OPERATOR_KEY": OPERATOR_KEY,
           "TENANTFLOW_ENCRYPTION_KEY": "k1:" + base64.b64encode(b"r" * 32).decode(),
           "TENANTFLOW_DEFAULT_ENDPOINT": emulator.base_url}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("TENANTFLOW_QUEUE_CONNECTION", "TENANTFLOW_URL", "TENANTFLOW_FLOWS_DIR"):
        monkeypatch.delenv(name, raising=False)
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "tenantflow"), "serve", "--port", str(port)],
                              env=dict(os.environ), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/api/health", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and server.poll() is None, server.stderr.read().decode()
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def cli(monkeypatch, capsys):
    return cli_runner(monkeypatch, capsys)


def test_the_same_commands_print_the_same_locally_and_through_the_api(served, cli, emulator):
    def both(*command: str, stdin: str | None = None) -> tuple[int, str, str]:
        local = cli(*command, stdin=stdin)
        remote = cli("--url", served, *command, stdin=stdin)
        assert remote == local, command
        return local

    assert cli("tenants", "add", "alpha", "--name", "Alpha Ltd")[0] == 0
    code, out, _ = cli("--url", served, "tenants", "add", "beta", "--name", "Beta Ltd")
    assert code == 0 and out.startswith("tenant beta added (Beta Ltd)\nAPI key (shown once; store it now):\ntf_")
    assert cli("credentials", "set", "alpha", "foundry", "--kind", "azure_openai", "--endpoint", emulator.base_url,
               "--api-key-stdin", stdin="sk-local-canary\n")[0] == 0
    code, out, _ = cli("--url", served, "credentials", "set", "beta", "foundry", "--kind", "azure_openai",
                       "--endpoint", emulator.base_url, "--api-key-stdin", stdin="sk-remote-canary\n")
    assert (code, out) == (0, "credential foundry saved for tenant beta (version 1)\n")
    assert cli("run", "support-reply", "--tenant", "beta", "--input", "ticket=hello")[0] == 0
    code, out, _ = cli("--url", served, "schedules", "add", "alpha", "support-reply", "--cron", "@daily",
                       "--input", "ticket=nightly")
    assert code == 0 and re.fullmatch(r"schedule [0-9a-f]{12} added: tenant alpha flow support-reply cron '@daily'\n",
                                      out)

    for json_flag in ((), ("--json",)):
        both("tenants", "list", *json_flag)
        both("tenants", "keys", "list", "alpha", *json_flag)
        both("credentials", "list", "beta", *json_flag)
        both("budgets", "show", "beta", *json_flag)
        both("schedules", "list", *json_flag)
        both("schedules", "list", "alpha", *json_flag)
    for usage in (["usage"], ["usage", "--group-by", "tenant"], ["usage", "--tenant", "beta", "--format", "json"],
                  ["usage", "--group-by", "model", "--format", "csv"]):
        code, out, _ = both(*usage)
        assert code == 0 and ("beta" in out or "gpt-4o-mini" in out or "TOTAL" in out)
    listed = both("credentials", "list", "beta", "--json")[1]
    assert '"api_key": "******"' in listed and "canary" not in listed

    # gateway model aliases: set (a replace, so twice is fine), list, and a remove in each mode
    assert both("models", "set", "alpha", "chat", "--credential", "foundry", "--deployment", "gpt-4o-mini",
                "--price-as", "gpt-4o-mini") == (0, "model chat of tenant alpha: credential foundry, deployment "
                                                 "gpt-4o-mini, priced as gpt-4o-mini\n", "")
    for alias in ("local-only", "remote-only"):
        assert cli("models", "set", "alpha", alias, "--credential", "foundry", "--deployment", "gpt-4o-mini")[0] == 0
    for json_flag in ((), ("--json",)):
        both("models", "list", "alpha", *json_flag)
    assert cli("models", "remove", "alpha", "local-only") == (0, "model local-only of tenant alpha removed\n", "")
    assert cli("--url", served, "models", "remove", "alpha", "remote-only") == (
        0, "model remote-only of tenant alpha removed\n", "")
    code, out, _ = both("models", "list", "alpha", "--json")
    assert code == 0 and [m["alias"] for m in json.loads(out)] == ["chat"]

    # mutations that print no new id, each done once per mode: the same lines
    assert both("budgets", "set", "alpha", "--monthly-tokens", "500", "--monthly-cost", "2.50")[0] == 0
    assert both("tenants", "suspend", "alpha") == (0, "tenant alpha suspended\n", "")
    assert both("tenants", "activate", "alpha") == (0, "tenant alpha active\n", "")

    # refusals: the same one-line error and exit code
    for command in (["budgets", "show", "nobody"], ["tenants", "add", "alpha"], ["tenants", "add", "Not An Id"],
                    ["credentials", "set", "alpha", "foundry", "--kind", "azure_openai", "--entra"],
                    ["credentials", "delete", "alpha", "missing"],
                    ["tenants", "keys", "revoke", "alpha", "0123456789ab"],
                    ["schedules", "add", "alpha", "support-reply", "--cron", "every minute"],
                    ["schedules", "add", "alpha", "no-such-flow", "--cron", "@daily"],
                    ["schedules", "remove", "000000000000"], ["budgets", "set", "alpha"],
                    ["budgets", "set", "alpha", "--monthly-cost", "lots"], ["usage", "--from", "yesterday"],
                    ["models", "list", "nobody"], ["models", "remove", "alpha", "no-such-alias"],
                    ["models", "set", "alpha", "x", "--credential", "missing", "--deployment", "gpt-4o-mini"],
                    ["models", "set", "alpha", "x", "--credential", "foundry", "--deployment", "bad/name"]):
        code, out, err = both(*command)
        assert code == 2 and out == "" and err.startswith("error: ") and err.count("\n") == 1, (command, err)


def test_remote_mode_refusals(served, cli, monkeypatch):
    code, _, err = cli("--url", served, "run", "support-reply", "--tenant", "alpha")
    assert code == 2 and "`tenantflow run` works on this machine's store only" in err
    code, _, err = cli("--url", served, "--operator-key", "wrong", "tenants", "list")
    assert code == 1 and "operator key" in err and "wrong" not in err
    monkeypatch.delenv("TENANTFLOW_OPERATOR_KEY")
    code, _, err = cli("--url", served, "tenants", "list")
    assert code == 2 and "--operator-key" in err
    code, _, err = cli("--url", "ftp://example", "--operator-key", "k", "tenants", "list")
    assert code == 2 and "expected the app's base URL" in err
    code, _, err = cli("--url", "http://func-x.azurewebsites.net", "--operator-key", "k", "tenants", "list")
    assert code == 2 and "use https" in err  # the key never goes out in clear
    port = free_port()
    code, _, err = cli("--url", f"http://127.0.0.1:{port}", "--operator-key", "k", "tenants", "list")
    assert code == 1 and "no answer" in err
    monkeypatch.setenv("TENANTFLOW_URL", served)
    monkeypatch.setenv("TENANTFLOW_OPERATOR_KEY", OPERATOR_KEY)
    assert cli("tenants", "add", "from-env")[0] == 0  # TENANTFLOW_URL alone picks remote mode …
    assert cli("validate", "-q")[0] == 0  # … for the commands that have a remote mode; the others stay local


def test_smoke_passes_against_serve_and_names_the_failing_check(served, cli, emulator):
    code, out, err = cli("smoke", "--url", served, "--operator-key", OPERATOR_KEY, "--endpoint", emulator.base_url,
                         "--api-key-stdin", stdin="emulator-key\n")
    assert code == 0, out + err
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines[:-1]] == [
        "ok    health", "ok    tenant added", "ok    credential set", "ok    API key created",
        "ok    support-reply run", "ok    usage recorded", "ok    budget counted", "ok    tenant retired"]
    assert lines[-1].startswith("smoke: all 8 checks passed")
    tenant = re.search(r"tenant (smoke-[0-9a-f]{8}) added", out).group(1)
    code, listed, _ = cli("tenants", "list")
    assert f"{tenant:<24} suspended" in listed
    assert "emulator-key" not in out + err

    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there: the run fails, and the tenant is retired
    code, out, _ = cli("--url", served, "smoke", "--endpoint", closed, "--api-key-stdin", stdin="sk-closed-port\n")
    assert code == 1, out
    assert re.search(r"^FAIL  support-reply run: ", out, re.MULTILINE), out
    assert re.search(r"^ok    tenant retired: ", out, re.MULTILINE)
    assert out.splitlines()[-1] == "smoke: FAILED at 'support-reply run' (5 of 8 checks passed)"
