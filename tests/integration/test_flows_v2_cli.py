"""Flows v2 through the `tenantflow` CLI (subprocesses, SQLite store, the emulator over HTTP): `import promptflow`
on prompt flow folders written the way prompt flow's samples are (tests/promptflow/*), `credentials import`,
step progress on a terminal, and a concurrent fan-out metered once per call."""

from __future__ import annotations

import base64
import json
import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shared.emulator.server import fingerprint
from shared.promptflow.flows import PromptFlowError, import_promptflow

FOLDERS = Path(__file__).resolve().parent.parent / "promptflow"
CANARY = "sk-pf-canary-7d2a11"


@pytest.fixture
def cli(tmp_path, emulator):
    env = {**os.environ, "TENANTFLOW_STORE": "sqlite", "TENANTFLOW_SQLITE_PATH": str(tmp_path / "cli.db"),
           "TENANTFLOW_ALLOWED_HOSTS": "127.0.0.1", "TENANTFLOW_DEFAULT_ENDPOINT": emulator.base_url,
           "TENANTFLOW_ENCRYPTION_KEY": "k1:" + base64.b64encode(os.urandom(32)).decode(),
           "EMULATOR_URL": emulator.base_url}
    env.pop("TENANTFLOW_FLOWS_DIR", None)

    def run(*args: str, stdin: str | None = None, env_extra: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "shared.cli", *args], input=stdin,
                                env={**env, **(env_extra or {})}, capture_output=True, text=True, timeout=60)
        assert "Traceback" not in result.stderr, result.stderr
        return result

    run.env = env  # type: ignore[attr-defined]
    return run


def azure_connection(tmp_path: Path, name: str, key: str = "<user-input>") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text("$schema: https://azuremlschemas.azureedge.net/promptflow/latest/AzureOpenAIConnection.schema.json\n"
                    f"name: {name}\ntype: azure_open_ai\napi_key: \"{key}\"\napi_base: \"${{env:EMULATOR_URL}}\"\n"
                    "api_type: azure\napi_version: 2024-10-21\n")
    return path


def imported_run(cli, tmp_path, folder: str, connection: str, *inputs: str) -> dict:
    assert cli("tenants", "add", "contoso").returncode == 0
    added = cli("credentials", "import", "contoso", "-f", str(azure_connection(tmp_path, connection)),
                stdin=CANARY + "\n")
    assert added.returncode == 0, added.stderr
    out = tmp_path / f"{folder}.yaml"
    converted = cli("import", "promptflow", str(FOLDERS / folder), "--out", str(out))
    assert converted.returncode == 0, converted.stderr
    assert cli("validate", str(out)).returncode == 0
    ran = cli("run", str(out), "--tenant", "contoso", "--json", *inputs)
    assert ran.returncode == 0, ran.stderr
    assert CANARY not in ran.stdout + ran.stderr + out.read_text()
    return json.loads(ran.stdout)


def test_chat_with_history_converts_and_answers(cli, tmp_path, emulator):
    history = [{"inputs": {"question": "Hi"}, "outputs": {"answer": "Hello, how can I help?"}}]
    before = emulator.stats()["by_key_fingerprint"].get(fingerprint(CANARY), 0)
    result = imported_run(cli, tmp_path, "chat-with-history", "helpdesk_aoai", "--input",
                          "question=I forgot my password", "--input", f"chat_history={json.dumps(history)}")
    assert result["status"] == "succeeded"
    assert result["outputs"]["answer"].startswith("[gpt-4o-mini] Re: I forgot my password #")
    # the tenant's imported credential (its key from stdin) made the call
    assert emulator.stats()["by_key_fingerprint"][fingerprint(CANARY)] == before + 1
    text = (tmp_path / "chat-with-history.yaml").read_text()
    assert "connection: helpdesk_aoai" in text and "max_completion_tokens: 300" in text


def test_classification_with_activate_runs_only_the_activated_branch(cli, tmp_path):
    result = imported_run(cli, tmp_path, "support-triage", "open_ai_connection", "--input",
                          "message=Billing: I was charged twice this month")
    assert result["status"] == "succeeded"
    outputs = result["outputs"]
    assert outputs["category"] == "billing"
    assert outputs["billing_reply"].startswith("[gpt-4o-mini] Re: Billing: I was charged twice")
    assert outputs["technical_reply"] is None
    assert [s["id"] for s in result["steps"] if s["usage"]] == ["classify", "billing_reply"]


def test_multi_node_flow_with_a_prompt_node_and_json_output(cli, tmp_path):
    result = imported_run(cli, tmp_path, "brief-and-title", "open_ai_connection", "--input",
                          "notes=SSO by March", "--input", "audience=support")
    outputs = result["outputs"]
    assert outputs["prompt_used"] == "Write a brief for support from these meeting notes:\nSSO by March\n"
    assert outputs["brief"].startswith("[gpt-4o-mini] Re: Write a brief for support from these meeting notes: SSO")
    assert outputs["title"].startswith("[gpt-4o-mini] Re: [gpt-4o-mini] Re: Write a brief")
    # prompt flow runs a DAG: `title` is first in the file but needs `write_brief`
    assert [s["id"] for s in result["steps"]] == ["brief_prompt", "write_brief", "title"]


def test_python_nodes_are_listed_with_file_line_and_fail_the_import_unless_partial(cli, tmp_path):
    folder = FOLDERS / "with-python-node"
    refused = cli("import", "promptflow", str(folder))
    assert refused.returncode == 2 and refused.stdout == ""
    dag = f"{folder}/flow.dag.yaml"
    assert f"{dag}:11: node fetch_page: python node (fetch_page.py): Tenantflow flows run no code" in refused.stderr
    assert f"{dag}:25: node summarize: presence_penalty: 0.5 is not imported (only its default is)" in refused.stderr
    partial = cli("import", "promptflow", str(folder), "--partial", "--out", str(tmp_path / "p.yaml"))
    assert partial.returncode == 0, partial.stderr
    assert "not imported: " + dag + ":11: node fetch_page" in partial.stderr
    assert cli("validate", str(tmp_path / "p.yaml")).returncode == 0


def broken_folder(tmp_path: Path, dag: str, files: dict[str, str] | None = None) -> Path:
    folder = tmp_path / "broken"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    (folder / "flow.dag.yaml").write_text(dag)
    for name, text in (files or {}).items():
        (folder / name).write_text(text)
    return folder


NODE = ("nodes:\n- name: chat\n  type: llm\n  source:\n    type: code\n    path: chat.jinja2\n  inputs:\n"
        "    deployment_name: gpt-4o-mini\n    question: ${inputs.question}\n  connection: conn\n  api: chat\n")
INPUTS = "inputs:\n  question:\n    type: string\n"


@pytest.mark.parametrize("dag,files,expected", [
    ("inputs:\n  question: {type: string\nnodes: []\n", {}, "flow.dag.yaml:3: YAML syntax error"),
    (INPUTS + NODE, {}, "flow.dag.yaml:9: node chat: prompt file chat.jinja2 not found or not UTF-8 text"),
    (INPUTS + NODE, {"chat.jinja2": "# user:\n{{ question }\n"}, "chat.jinja2:2: Jinja syntax error: unexpected '}'"),
    (INPUTS + NODE, {"chat.jinja2": "# user:\n{{ question }} in {{ language }}\n"},
     "chat.jinja2:2: the prompt uses 'language', which node chat does not give as an input"),
    (INPUTS + NODE.replace("${inputs.question}", "${ask.output}"), {"chat.jinja2": "# user:\n{{ question }}\n"},
     "flow.dag.yaml:12: node chat: reference to unknown node 'ask'"),
    (INPUTS + NODE.replace("${inputs.question}", "${inputs.qestion}"), {"chat.jinja2": "# user:\n{{ question }}\n"},
     "flow.dag.yaml:12: node chat: input question: unknown flow input 'qestion'"),
    (INPUTS + NODE, {"chat.jinja2": "Answer: {{ question }}\n"},
     "chat.jinja2:1: the prompt has no role line (# system:, # user: or # assistant:); the chat API needs one"),
    (INPUTS + "outputs:\n  a: {type: string}\n" + NODE, {"chat.jinja2": "# user:\n{{ question }}\n"},
     "flow.dag.yaml:5: output a: needs a `reference` like ${node.output}"),
])
def test_malformed_prompt_flow_files_give_file_line_errors(tmp_path, dag, files, expected):
    folder = broken_folder(tmp_path, dag, files)
    with pytest.raises(PromptFlowError) as caught:
        import_promptflow(folder, {"default"})
    assert any(expected in str(f) for f in caught.value.findings), caught.value
    assert all(str(f).startswith(str(folder)) for f in caught.value.findings)


def test_credentials_import_fills_secrets_from_env_and_stdin_and_replaces_only_when_asked(cli, tmp_path, emulator):
    assert cli("tenants", "add", "fabrikam").returncode == 0
    conn = azure_connection(tmp_path, "fab_aoai", key="${env:FAB_KEY}")
    missing = cli("credentials", "import", "fabrikam", "-f", str(conn))
    assert missing.returncode == 2 and f"{conn}:4: api_key: environment variable FAB_KEY is not set" in missing.stderr
    ok = cli("credentials", "import", "fabrikam", "-f", str(conn), env_extra={"FAB_KEY": CANARY})
    assert ok.returncode == 0, ok.stderr
    assert "credential fab_aoai (azure_openai) imported for tenant fabrikam" in ok.stdout
    again = cli("credentials", "import", "fabrikam", "-f", str(azure_connection(tmp_path, "fab_aoai")),
                stdin="other-key\n")
    assert again.returncode == 2 and "already has a credential fab_aoai; pass --replace" in again.stderr
    no_stdin = cli("credentials", "import", "fabrikam", "-f", str(azure_connection(tmp_path, "fab_aoai")),
                   "--replace", stdin="")
    assert no_stdin.returncode == 2 and "api_key: a placeholder; no value for it on standard input" in no_stdin.stderr
    replaced = cli("credentials", "import", "fabrikam", "-f", str(azure_connection(tmp_path, "fab_aoai")),
                   "--replace", stdin="sk-replaced-key\n")
    assert replaced.returncode == 0 and "replaced" in replaced.stdout and "version 2" in replaced.stdout
    listed = json.loads(cli("credentials", "list", "fabrikam", "--json").stdout)
    assert listed[0]["api_key"] == "******" and listed[0]["endpoint"] == emulator.base_url
    assert "<user-input>" not in json.dumps(listed) and CANARY not in json.dumps(listed)

    custom = tmp_path / "custom.yaml"
    custom.write_text("name: search\ntype: custom\nconfigs:\n  index-name: docs\nsecrets:\n  api-key: <user-input>\n"
                      "  admin_token: ${env:ADMIN}\n")
    made = cli("credentials", "import", "fabrikam", "-f", str(custom), stdin="sk-search\n", env_extra={"ADMIN": "t"})
    assert made.returncode == 0, made.stderr
    view = next(v for v in json.loads(cli("credentials", "list", "fabrikam", "--json").stdout) if v["name"] == "search")
    assert view["configs"] == {"index_name": "docs"} and view["secrets"] == {"admin_token": "******"}
    assert view["api_key"] == "******"

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntype: azure_open_ai\napi_key: k\nendpoint: https://x.openai.azure.com\n")
    refused = cli("credentials", "import", "fabrikam", "-f", str(bad))
    assert refused.returncode == 2 and f"{bad}:4: unknown key 'endpoint' for type azure_open_ai" in refused.stderr


def test_run_shows_steps_as_they_finish_on_a_terminal(cli, tmp_path):
    assert cli("tenants", "add", "contoso").returncode == 0
    flow = tmp_path / "two.yaml"
    flow.write_text("id: two\nsteps:\n  - {id: first, kind: chat_completion, model: gpt-4o-mini, user_prompt: a}\n"
                    "  - {id: second, kind: chat_completion, model: gpt-4o-mini, user_prompt: b}\n")
    leader, follower = pty.openpty()
    try:
        process = subprocess.run([sys.executable, "-m", "shared.cli", "run", str(flow), "--tenant", "contoso"],
                                 env=cli.env, stdout=subprocess.PIPE, stderr=follower, text=True, timeout=60)
        os.close(follower)
        follower = -1
        chunks = []
        while True:
            try:
                data = os.read(leader, 4096)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
    finally:
        if follower != -1:
            os.close(follower)
        os.close(leader)
    terminal = b"".join(chunks).decode()
    assert process.returncode == 0
    lines = [line.split() for line in terminal.splitlines() if line.strip()]
    assert [line[:2] for line in lines] == [["first", "succeeded"], ["second", "succeeded"]]
    assert all(line[-1] == "tokens" and int(line[-2]) > 0 for line in lines)
    piped = cli("run", str(flow), "--tenant", "contoso")
    assert "succeeded" not in piped.stderr  # not a terminal: no progress lines


def test_concurrent_fan_out_is_metered_once_per_call(cli):
    assert cli("tenants", "add", "contoso").returncode == 0
    documents = json.dumps([f"doc {n} [[fault:latency=50]]" for n in range(12)])
    ran = cli("run", "summarize-fan-out", "--tenant", "contoso", "--json", "--input", f"documents={documents}")
    assert ran.returncode == 0, ran.stderr
    result = json.loads(ran.stdout)
    calls = [s for s in result["steps"] if s["usage"]]
    assert [(s["id"], s["iteration"]) for s in calls] == [("summarize", n) for n in range(12)] + [("combine", 0)]
    assert result["usage"]["total_tokens"] == sum(s["usage"]["total_tokens"] for s in calls)
    usage = json.loads(cli("usage", "--tenant", "contoso", "--group-by", "flow", "--format", "json").stdout)
    assert usage["totals"]["total_tokens"] == result["usage"]["total_tokens"] and usage["totals"]["runs"] == 1
