"""The CLI as an operator meets it: --version, --json on every list and show, help with an example on every
subcommand, unknown tenants refused everywhere, progress only on a terminal, and `credentials test` against the
emulator over HTTP (ok, wrong key, unreachable, refused endpoint). In-process `main()` on a throwaway SQLite store."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys

import pytest

from shared.cli import EXAMPLES, Progress, build_parser, describe_commands, listed_help, subcommands
from shared.emulator.server import running_emulator
from tests.backends.pg_cluster import free_port
from tests.cli_runner import cli_runner

KEY = "emulator-only-key-7d2c"


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TENANTFLOW_STORE", "sqlite")
    monkeypatch.setenv("TENANTFLOW_SQLITE_PATH", str(tmp_path / "cli.db"))
    monkeypatch.setenv("TENANTFLOW_ALLOWED_HOSTS", "127.0.0.1")
    monkeypatch.setenv("TENANTFLOW_ENCRYPTION_KEY", "k1:" + base64.b64encode(b"e" * 32).decode())
    monkeypatch.delenv("TENANTFLOW_FLOWS_DIR", raising=False)

    return cli_runner(monkeypatch, capsys)




def test_version():
    result = subprocess.run([sys.executable, "-m", "shared.cli", "--version"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("tenantflow ") and result.stdout.endswith("\n")
    assert result.stdout.split()[1][0].isdigit()


def test_every_subcommand_has_help_and_an_example():
    parser = describe_commands(build_parser())
    found = subcommands(parser)
    assert len(found) >= len(EXAMPLES)
    for path, child, parent in found:
        assert path in EXAMPLES, f"`tenantflow {path}` has no entry in EXAMPLES"
        assert listed_help(parent, path.rsplit(" ", 1)[-1]), path
        text = child.format_help()
        assert "example:\n  " in text and EXAMPLES[path][1] in text, path
        assert EXAMPLES[path][1].split()[0] in ("tenantflow", "KEY=$(tenantflow", "SECRET=$(tenantflow",
                                                "echo", "TENANTFLOW_ENCRYPTION_KEY=k2:NEW,k1:OLD"), path


def test_json_on_every_list_and_show(cli):
    assert cli("tenants", "add", "contoso", "--name", "Contoso <Ltd>")[0] == 0
    assert cli("schedules", "add", "contoso", "support-reply", "--cron", "@daily", "--input", "ticket=t")[0] == 0
    assert cli("credentials", "set", "contoso", "foundry", "--kind", "azure_openai", "--endpoint",
               "http://127.0.0.1:9", "--api-key-stdin", stdin="sk-canary-json\n")[0] == 0
    outputs = {}
    for command in (["tenants", "list"], ["tenants", "keys", "list", "contoso"], ["schedules", "list"],
                    ["schedules", "list", "contoso"], ["credentials", "list", "contoso"],
                    ["budgets", "show", "contoso"], ["usage"]):
        code, out, _ = cli(*command, "--json")
        assert code == 0 and out.endswith(("}\n", "]\n")), command
        outputs[" ".join(command)] = json.loads(out)
    assert outputs["tenants list"] == [{"id": "contoso", "name": "Contoso <Ltd>", "status": "active",
                                        "created_at": outputs["tenants list"][0]["created_at"]}]
    [key] = outputs["tenants keys list contoso"]
    assert key["status"] == "active" and len(key["key_id"]) == 12 and key["revoked_at"] is None
    [schedule] = outputs["schedules list contoso"]
    assert (schedule["tenant"], schedule["flow"], schedule["cron"], schedule["inputs"]) == (
        "contoso", "support-reply", "@daily", {"ticket": "t"})
    assert outputs["schedules list"] == outputs["schedules list contoso"]
    [credential] = outputs["credentials list contoso"]
    assert credential["api_key"] == "******" and "sk-canary-json" not in json.dumps(outputs)
    assert outputs["budgets show contoso"]["tenant"] == "contoso"
    assert outputs["usage"]["totals"]["total_tokens"] == 0


@pytest.mark.parametrize("command", [
    ["tenants", "suspend", "nobody"],
    ["tenants", "activate", "nobody"],
    ["tenants", "webhook-secret", "nobody"],
    ["tenants", "keys", "create", "nobody"],
    ["tenants", "keys", "list", "nobody"],
    ["tenants", "keys", "revoke", "nobody", "0123456789ab"],
    ["credentials", "set", "nobody", "foundry", "--kind", "azure_openai", "--endpoint", "http://127.0.0.1:9",
     "--entra"],
    ["credentials", "list", "nobody"],
    ["credentials", "test", "nobody", "foundry"],
    ["credentials", "delete", "nobody", "foundry"],
    ["budgets", "set", "nobody", "--monthly-tokens", "5"],
    ["budgets", "show", "nobody"],
    ["schedules", "add", "nobody", "support-reply", "--cron", "@hourly", "--input", "ticket=x"],
    ["schedules", "list", "nobody"],
    ["usage", "--tenant", "nobody"],
    ["tenants", "members", "add", "nobody", "ann@contoso.com"],
    ["tenants", "members", "list", "nobody"],
    ["dashboard-link", "nobody"],
])
def test_an_unknown_tenant_is_an_error_on_every_command(cli, command):
    code, out, err = cli(*command)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: unknown tenant 'nobody'"), err


def test_progress_only_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal, pipe = Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        with Progress("re-encrypting credentials", stream) as progress:
            progress.update(1)
            progress.update(2, 5)
    assert terminal.getvalue() == "\rre-encrypting credentials: 1 done\rre-encrypting credentials: 2/5 done\n"
    assert pipe.getvalue() == ""


def test_rotate_key_reports_through_a_pipe_without_progress(cli, monkeypatch):
    cli("tenants", "add", "contoso")
    cli("credentials", "set", "contoso", "foundry", "--kind", "azure_openai", "--endpoint", "http://127.0.0.1:9",
        "--api-key-stdin", stdin="sk-rotate\n")
    old = os.environ["TENANTFLOW_ENCRYPTION_KEY"]
    monkeypatch.setenv("TENANTFLOW_ENCRYPTION_KEY", "k2:" + base64.b64encode(b"f" * 32).decode() + "," + old)
    code, out, err = cli("credentials", "rotate-key")
    assert code == 0 and "re-encrypted 1 credentials and 1 webhook secrets" in out
    assert "\r" not in err


def test_credentials_test_ok_wrong_key_unreachable_and_refused(cli, monkeypatch):
    cli("tenants", "add", "contoso")
    with running_emulator(api_keys={KEY}) as emulator:
        for name, endpoint, key in (("good", emulator.base_url, KEY), ("wrong", emulator.base_url, "not-the-key"),
                                    ("down", f"http://127.0.0.1:{free_port()}", KEY)):
            assert cli("credentials", "set", "contoso", name, "--kind", "azure_openai", "--endpoint", endpoint,
                       "--api-key-stdin", stdin=key + "\n")[0] == 0
        code, out, err = cli("credentials", "test", "contoso", "good", "--json")
        good = json.loads(out)
        assert code == 0 and good["ok"] and good["reachable"] and good["authenticated"]
        assert good["latency_ms"] > 0 and good["endpoint_host"] == "127.0.0.1" and good["model"] == "gpt-4o-mini"
        assert emulator.stats()["by_deployment"] == {"gpt-4o-mini": 1}

        code, out, err = cli("credentials", "test", "contoso", "wrong")
        assert code == 1 and "reachable: yes  authenticated: no" in out
        assert "reason: authentication_failed: authentication failed at 127.0.0.1" in err and KEY not in out + err

        code, out, err = cli("credentials", "test", "contoso", "down", "--json", "--timeout", "5")
        down = json.loads(out)
        assert code == 1 and (down["reachable"], down["authenticated"], down["code"]) == (
            False, None, "model_unavailable")
        assert "unreachable" in down["reason"]

        monkeypatch.setenv("TENANTFLOW_ALLOWED_HOSTS", "")  # now 127.0.0.1 over http is not an allowed endpoint
        code, out, err = cli("credentials", "test", "contoso", "good", "--json")
        refused = json.loads(out)
        assert code == 1 and refused["code"] == "endpoint_refused" and refused["reachable"] is None
        assert "credential good" in refused["reason"]

    code, out, err = cli("credentials", "test", "contoso", "missing")
    assert code == 1 and "credential_not_found" in err and "tenant contoso has no credential missing" in err


def test_dashboard_link_verifies_with_the_stores_key(cli):
    from datetime import UTC, datetime, timedelta
    from urllib.parse import parse_qs, urlsplit

    from shared.secret import parse_encryption_keys
    from shared.services.dashboard_access import verify_dashboard_token

    cli("tenants", "add", "contoso")
    code, out, err = cli("dashboard-link", "contoso", "--ttl", "2h", "--base-url", "https://func-x.azurewebsites.net")
    assert code == 0 and "valid until" in err
    url = urlsplit(out.strip().splitlines()[-1])
    assert (url.scheme, url.netloc, url.path) == ("https", "func-x.azurewebsites.net", "/api/dashboard")
    keys = [k.key for k in parse_encryption_keys(os.environ["TENANTFLOW_ENCRYPTION_KEY"])]
    now = datetime.now(UTC)
    scope = verify_dashboard_token(parse_qs(url.query)["token"][0], keys, now)
    assert scope.tenant == "contoso" and not scope.operator
    assert timedelta(minutes=119) < scope.expires_at - now <= timedelta(hours=2)

    code, out, _ = cli("dashboard-link", "--operator", "--json")
    link = json.loads(out)
    assert code == 0 and link["operator"] and link["url"].startswith("http://127.0.0.1:7071/api/dashboard?token=")
    assert verify_dashboard_token(link["url"].split("token=")[1], keys, now).operator

    assert cli("dashboard-link", "nobody")[2].startswith("error: unknown tenant 'nobody'")
    assert "name a tenant, or give --operator" in cli("dashboard-link")[2]
    assert "--ttl '1y'" in cli("dashboard-link", "contoso", "--ttl", "1y")[2]


def test_console_spans_of_a_credentials_test(tmp_path, emulator):
    env = {**os.environ, "TENANTFLOW_STORE": "sqlite", "TENANTFLOW_SQLITE_PATH": str(tmp_path / "t.db"),
           "TENANTFLOW_ALLOWED_HOSTS": "127.0.0.1",
           "TENANTFLOW_ENCRYPTION_KEY": "k1:" + base64.b64encode(b"s" * 32).decode()}

    def tenantflow(*args: str, stdin: str | None = None, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "shared.cli", *args], input=stdin, env={**env, **extra},
                              capture_output=True, text=True, timeout=60)

    tenantflow("tenants", "add", "contoso")
    tenantflow("credentials", "set", "contoso", "foundry", "--kind", "azure_openai", "--endpoint", emulator.base_url,
               "--api-key-stdin", stdin=KEY + "\n")
    result = tenantflow("credentials", "test", "contoso", "foundry", OTEL_TRACES_EXPORTER="console")
    assert result.returncode == 0, result.stderr
    [span] = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert span["name"] == "chat gpt-4o-mini" and span["kind"] == "SpanKind.CLIENT"
    assert span["attributes"]["gen_ai.usage.output_tokens"] == 1 and KEY not in result.stderr


def test_tenant_members_map_principals_to_tenants(cli):
    import asyncio

    from shared.bootstrap import build_services
    from shared.services.dashboard_access import parse_client_principal, principal_header
    from shared.services.members import TenantMembers

    cli("tenants", "add", "contoso")
    cli("tenants", "add", "fabrikam")
    assert cli("tenants", "members", "add", "contoso", "Ann@Contoso.com") == (
        0, "Ann@Contoso.com added to tenant contoso\n", "")
    assert "was already a member" in cli("tenants", "members", "add", "contoso", "ann@contoso.com")[1]
    cli("tenants", "members", "add", "fabrikam", "0f1e-oid")
    code, out, _ = cli("tenants", "members", "list", "contoso", "--json")
    assert code == 0 and json.loads(out) == ["ann@contoso.com"]

    async def tenants_for(header: str) -> list[str]:
        svc = await build_services()
        try:
            principal = parse_client_principal(header)
            assert principal is not None
            return await TenantMembers(svc.stores.tenants, svc.stores.members).tenants_for(principal)
        finally:
            await svc.close()

    oid = "http://schemas.microsoft.com/identity/claims/objectidentifier"
    both = principal_header([{"typ": "name", "val": "ANN@contoso.com"}, {"typ": oid, "val": "0F1E-OID"}])
    assert asyncio.run(tenants_for(both)) == ["contoso", "fabrikam"]
    assert asyncio.run(tenants_for(principal_header([{"typ": "name", "val": "eve@x.com"}]))) == []

    assert cli("tenants", "members", "remove", "contoso", "ann@contoso.com")[0] == 0
    code, _, err = cli("tenants", "members", "remove", "contoso", "ann@contoso.com")
    assert code == 2 and "tenant contoso has no member ann@contoso.com" in err
    assert cli("tenants", "members", "list", "contoso")[1] == ""


def test_a_run_is_one_trace_of_run_step_and_model_call_spans(tmp_path, emulator):
    """Issue 15: with OTEL_TRACES_EXPORTER=console, a run prints its spans as JSON on stderr — the run, each step,
    and each model call with the GenAI attributes — all in one trace, with no prompt text and no key."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TENANTFLOW_")},
           "TENANTFLOW_SQLITE_PATH": str(tmp_path / "spans.db"), "TENANTFLOW_ALLOWED_HOSTS": "127.0.0.1",
           "TENANTFLOW_DEFAULT_ENDPOINT": emulator.base_url,
           "TENANTFLOW_ENCRYPTION_KEY": "k1:" + base64.b64encode(b"s" * 32).decode()}

    def tenantflow(*args: str, stdin: str | None = None, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "shared.cli", *args], input=stdin, env={**env, **extra},
                              capture_output=True, text=True, timeout=60)

    tenantflow("tenants", "add", "contoso")
    tenantflow("credentials", "set", "contoso", "foundry", "--kind", "azure_openai", "--endpoint", emulator.base_url,
               "--api-key-stdin", stdin=KEY + "\n")
    result = tenantflow("run", "support-reply", "--tenant", "contoso", "--input", "ticket=Where is parcel 7781?",
                        "--json", OTEL_TRACES_EXPORTER="console")
    assert result.returncode == 0, result.stderr
    run = json.loads(result.stdout)
    spans = {span["name"]: span for span in (json.loads(line) for line in result.stderr.splitlines()
                                             if line.startswith("{"))}
    assert {"run support-reply", "step creds", "step connect", "step draft", "chat gpt-4o-mini"} <= set(spans)
    assert len({span["context"]["trace_id"] for span in spans.values()}) == 1
    root = spans["run support-reply"]
    assert root["attributes"]["run.id"] == run["run_id"] and root["attributes"]["tenant.id"] == "contoso"
    assert root["attributes"]["run.status"] == "succeeded"
    assert spans["step draft"]["parent_id"] == root["context"]["span_id"]
    chat = spans["chat gpt-4o-mini"]["attributes"]
    assert chat["gen_ai.system"] == "az.ai.openai" and chat["gen_ai.request.model"] == "gpt-4o-mini"
    assert chat["gen_ai.response.model"] and chat["run.id"] == run["run_id"] and chat["flow.id"] == "support-reply"
    assert chat["gen_ai.usage.input_tokens"] + chat["gen_ai.usage.output_tokens"] == run["usage"]["total_tokens"]
    assert KEY not in result.stderr and "parcel 7781" not in result.stderr
