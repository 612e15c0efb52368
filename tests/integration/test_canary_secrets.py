"""Canary secrets never leave the credential store in plaintext — on every backend.

Several tenants store canary API keys; flows run for each, on success and failure paths (another tenant's
credential, a tampered endpoint, a flow that tries to put the key into a prompt or an output). Then everything
the app wrote — logs, run history, errors, every row of the database — is searched for the canaries.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import sqlite3

from shared.bootstrap import build_services
from shared.engine.errors import FlowError
from shared.secret import Secret
from shared.services.runs import run_to_json

LEAKY_OUTPUT_FLOW = """
id: leaky-output
steps:
  - {id: c, kind: load_credential, name: foundry, result: cred}
  - {id: d, kind: declare_variable, name: everything, type: object, value: "{{ cred }}"}
outputs:
  stolen: "{{ everything }}"
"""
OTHER_TENANTS_CREDENTIAL_FLOW = """
id: steal
steps:
  - {id: c, kind: load_credential, name: only-a, result: cred}
  - {id: connect, kind: create_azure_ai_connection, api_key: "{{ cred.api_key }}", endpoint: "{{ cred.endpoint }}",
     connection_variable: ai}
  - {id: ask, kind: chat_completion, dynamic_connection: ai, model: m, user_prompt: hi}
"""
LEAKY_PROMPT_FLOW = """
id: leaky-prompt
steps:
  - {id: c, kind: load_credential, name: foundry, result: cred}
  - {id: ask, kind: chat_completion, model: m, user_prompt: "key {{ cred.api_key }}"}
"""


async def dump_store(settings) -> str:
    """Every row of every table the backend wrote, as text."""
    if settings.store == "sqlite":
        connection = sqlite3.connect(settings.sqlite_path)
        tables = [r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        text = json.dumps({t: [list(map(str, row)) for row in connection.execute(f"SELECT * FROM {t}")]
                           for t in tables})
        connection.close()
        return text
    if settings.store == "postgres":
        from psycopg import AsyncConnection

        async with await AsyncConnection.connect(settings.postgres_migration_dsn.reveal()) as connection:
            tables = [r[0] for r in await (await connection.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).fetchall()]
            rows = []
            for table in tables:  # row-level security: read each tenant's rows under its own scope
                for tenant in ("canary-a", "canary-b", "canary-c"):
                    await connection.execute("SELECT set_config('tenantflow.tenant_id', %s, false)", (tenant,))
                    rows += await (await connection.execute(f"SELECT row_to_json(t)::text FROM {table} t")).fetchall()
        return json.dumps([r[0] for r in rows])
    from azure.data.tables.aio import TableServiceClient

    text = []
    async with TableServiceClient.from_connection_string(settings.table_connection.reveal()) as service:
        async for table in service.list_tables():
            if table.name.startswith(settings.table_prefix):
                async for entity in service.get_table_client(table.name).list_entities():
                    text.append(json.dumps(dict(entity), default=str))
    return "\n".join(text)


async def test_no_canary_anywhere(store_settings, emulator, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    flows = tmp_path / "flows"
    flows.mkdir()
    for name in ("support-reply.yaml",):
        (flows / name).write_text((store_settings.flows_dir / name).read_text())
    (flows / "leaky-output.yaml").write_text(LEAKY_OUTPUT_FLOW)
    (flows / "steal.yaml").write_text(OTHER_TENANTS_CREDENTIAL_FLOW)
    settings = dataclasses.replace(store_settings, allowed_hosts=("127.0.0.1",), flows_dir=flows,
                                   default_endpoint=emulator.base_url)
    svc = await build_services(settings)
    canaries = {t: f"sk-canary-{t}-{secrets.token_hex(8)}" for t in ("canary-a", "canary-b", "canary-c")}
    outputs: list[str] = []
    try:
        for tenant, key in canaries.items():
            await svc.tenants.add(tenant)
            await svc.credentials.set(tenant, "foundry", "azure_openai", endpoint=emulator.base_url,
                                      api_key=Secret(key))
            outputs.append(json.dumps([v.to_dict() for v in await svc.credentials.list(tenant)]))
        runs = [await svc.runs.run(t, "support-reply", {"ticket": f"hello from {t}"}, "cli") for t in canaries]
        assert [r.status for r in runs] == ["succeeded"] * 3
        # failure paths: a credential name only another tenant has; a tampered (non-allowlisted) endpoint;
        # a flow that renders the whole credential into an output; a flow that puts the key into a prompt
        await svc.credentials.set("canary-a", "only-a", "azure_openai", endpoint=emulator.base_url,
                                  api_key=Secret(canaries["canary-a"]))
        assert (await svc.runs.run("canary-a", "steal", {}, "cli")).status == "succeeded"
        other = await svc.runs.run("canary-b", "steal", {}, "cli")
        assert other.status == "failed" and other.error.startswith("step c: tenant canary-b has no credential")
        assert "only-a" in other.error
        stolen = dataclasses.replace(await svc.stores.credentials.get("canary-c", "foundry"),
                                     endpoint="https://attacker.example.net")
        await svc.stores.credentials.put(stolen)
        svc.credentials.invalidate("canary-c")
        tampered = await svc.runs.run("canary-c", "support-reply", {"ticket": "x"}, "cli")
        assert tampered.status == "failed" and "endpoint refused" in tampered.error
        leaked = await svc.runs.run("canary-a", "leaky-output", {}, "cli")
        assert leaked.status == "failed" and "secret" in leaked.error
        prompt_flow = tmp_path / "leaky-prompt.yaml"
        prompt_flow.write_text(LEAKY_PROMPT_FLOW)
        try:
            svc.catalog.load_reference(str(prompt_flow))  # the CLI's path loader
            raise AssertionError("a flow rendering a key into a prompt must not validate")
        except FlowError as exc:
            outputs.append(str(exc))
        history = []
        for tenant in canaries:
            history += [run_to_json(r) for r in await svc.stores.runs.list(tenant)]
        assert len(history) == 7
        outputs.append(json.dumps(history))
        outputs.append(await dump_store(settings))
    finally:
        await svc.close()
    everything = "\n".join(outputs) + caplog.text
    for key in canaries.values():
        assert key not in everything
    assert "canary-a" in everything  # the search did look at real content
