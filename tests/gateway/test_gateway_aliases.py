"""Model aliases from the CLI (`tenantflow models …`) and the operator routes; pricing by the served model."""

from __future__ import annotations

import base64
import json
import os
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from shared.cli import main
from shared.engine.usage import TokenUsage
from shared.secret import Secret
from shared.services.prices import PriceBook
from shared.settings import REPO_ROOT


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TENANTFLOW_STORE", "sqlite")
    monkeypatch.setenv("TENANTFLOW_SQLITE_PATH", str(tmp_path / "cli.db"))
    monkeypatch.setenv("TENANTFLOW_ENCRYPTION_KEY", "k1:" + base64.b64encode(os.urandom(32)).decode())

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_models_set_list_remove_and_their_errors(cli, monkeypatch):
    assert cli("models", "list", "contoso")[0:3:2] == (2, "error: unknown tenant 'contoso'\n")
    assert cli("tenants", "add", "contoso")[0] == 0
    code, _, err = cli("models", "set", "contoso", "chat", "--credential", "foundry", "--deployment", "prod-chat")
    assert code == 2 and "tenant contoso has no credential 'foundry'" in err
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("sk-0123456789abcdef\n"))
    assert cli("credentials", "set", "contoso", "foundry", "--kind", "azure_openai", "--endpoint",
               "https://contoso.openai.azure.com", "--api-key-stdin")[0] == 0
    code, out, _ = cli("models", "set", "contoso", "chat", "--credential", "foundry", "--deployment", "prod-chat",
                       "--price-as", "gpt-4o-mini")
    assert code == 0 and "deployment prod-chat, priced as gpt-4o-mini" in out
    code, _, err = cli("models", "set", "contoso", "x", "--credential", "foundry", "--deployment", "d",
                       "--price-as", "gpt-99")
    assert code == 2 and "price_as: 'gpt-99' is not a model of the price file" in err
    code, _, err = cli("models", "set", "contoso", "bad alias", "--credential", "foundry", "--deployment", "d")
    assert code == 2 and "alias: must be" in err
    code, out, _ = cli("models", "list", "contoso", "--json")
    listed = json.loads(out)
    assert [(m["alias"], m["credential"], m["deployment"], m["price_as"]) for m in listed] == [
        ("chat", "foundry", "prod-chat", "gpt-4o-mini")]
    assert cli("models", "remove", "contoso", "chat")[0] == 0
    code, _, err = cli("models", "remove", "contoso", "chat")
    assert code == 2 and "tenant contoso has no model alias 'chat'" in err
    assert json.loads(cli("models", "list", "contoso", "--json")[1]) == []


async def test_operator_routes_for_aliases(gateway):
    await gateway.svc.tenants.add("acme")
    await gateway.svc.credentials.set("acme", "foundry", "azure_openai", endpoint=gateway.upstream.base_url,
                                      api_key=Secret("sk-0123456789abcdef"))
    base = f"{gateway.base}/api/admin/tenants"
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{base}/acme/models")).status_code == 401  # no operator key
        gateway.svc.settings = __import__("dataclasses").replace(gateway.svc.settings,
                                                                 operator_key=Secret("op-key-0123456789"))
        op = {"x-operator-key": "op-key-0123456789"}
        put = await http.put(f"{base}/acme/models/chat", headers=op,
                             json={"credential": "foundry", "deployment": "prod-chat"})
        assert put.status_code == 200 and put.json()["deployment"] == "prod-chat"
        missing = await http.put(f"{base}/acme/models/x", headers=op, json={"credential": "nope", "deployment": "d"})
        assert missing.status_code == 404 and missing.json()["errors"][0]["field"] == "credential"
        unknown_tenant = await http.get(f"{base}/nobody/models", headers=op)
        assert unknown_tenant.status_code == 404
        assert (await http.get(f"{base}/acme/models/chat", headers=op)).json()["credential"] == "foundry"
        assert [m["alias"] for m in (await http.get(f"{base}/acme/models", headers=op)).json()["models"]] == ["chat"]
        assert (await http.delete(f"{base}/acme/models/chat", headers=op)).status_code == 204
        assert (await http.get(f"{base}/acme/models/chat", headers=op)).status_code == 404
        assert (await http.delete(f"{base}/acme/models/chat", headers=op)).status_code == 404


def test_prices_match_the_served_model_by_prefix_and_never_price_unknown_models_as_zero(caplog):
    book = PriceBook.load(Path(REPO_ROOT / "shared/services/prices.yaml"))
    usage = TokenUsage(1_000_000, 1_000_000, 2_000_000)
    mini = book.cost("t", usage, "gpt-4o-mini")
    assert book.cost("t", usage, "gpt-4o-mini-2024-07-18") == mini
    assert book.cost("t", usage, "gpt-4o-2024-08-06") == book.cost("t", usage, "gpt-4o") != mini  # longest prefix
    assert book.cost("t", usage, "gpt-4o-mini-2024-07-18", "prod-chat") == mini  # served model first
    assert book.cost("t", usage, "acme-llm-7", "prod-chat") is None
    assert "no price for model acme-llm-7/prod-chat" in caplog.text
    assert mini is not None and mini > Decimal(0)


async def test_a_flow_step_on_a_deployment_named_otherwise_is_priced_by_the_model_it_served(upstream):
    """A flow's model call to deployment `prod-chat`, whose upstream reports gpt-4o-mini-2024-07-18, is priced as
    gpt-4o-mini (the real model port and the emulator; the run's book on the in-memory store)."""
    from shared.connections.allowlist import EndpointAllowlist
    from shared.connections.openai_model import OpenAIModelPort
    from shared.engine.ports import ChatRequest, Connection
    from shared.services.metering import MeteredModelPort, RunBook
    from shared.storage.models import RunRecord
    from tests.memory.stores import InMemoryStores

    book_prices = PriceBook.load(Path(REPO_ROOT / "shared/services/prices.yaml"))
    stores = InMemoryStores()
    port = OpenAIModelPort(EndpointAllowlist(("127.0.0.1",)))
    book = RunBook(stores.bookkeeping, "acme", RunRecord("run-1", "acme", "f", "h", "cli", "running"))

    async def no_budget():
        return None

    metered = MeteredModelPort(port, book, book_prices, "run-1", "f", no_budget)
    connection = Connection("foundry", "azure_openai", upstream.base_url, Secret("sk-0123456789abcdef"))
    for deployment in ("prod-chat", "mystery"):
        await metered.chat(ChatRequest(connection, deployment, [{"role": "user", "content": "hi"}], step_id=deployment))
    await book.commit()
    await port.close()
    priced, unknown = metered.records
    assert priced.model == "prod-chat"  # the ledger names the deployment, as for every flow call
    assert priced.cost == book_prices.cost("acme", TokenUsage(priced.prompt_tokens, priced.completion_tokens,
                                                              priced.total_tokens), "gpt-4o-mini")
    assert unknown.model == "mystery" and unknown.cost is None  # unknown: null, never 0
