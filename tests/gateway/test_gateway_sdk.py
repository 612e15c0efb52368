"""The real openai SDK (OpenAI and AzureOpenAI, sync and async) against the gateway served over HTTP."""

from __future__ import annotations

import asyncio

import openai
import pytest
from pydantic import BaseModel

API_VERSION = "2024-10-21"


def clients(gateway, key):
    return (openai.OpenAI(base_url=f"{gateway.base}/api/v1", api_key=key, max_retries=0),
            openai.AzureOpenAI(azure_endpoint=f"{gateway.base}/api", api_key=key, api_version=API_VERSION,
                               max_retries=0))


async def test_openai_and_azure_clients_sync_and_async_get_the_upstream_answer(gateway):
    key = await gateway.tenant("acme")
    sync_openai, sync_azure = clients(gateway, key)
    async_openai = openai.AsyncOpenAI(base_url=f"{gateway.base}/api/v1", api_key=key, max_retries=0)
    async_azure = openai.AsyncAzureOpenAI(azure_endpoint=f"{gateway.base}/api", api_key=key, api_version=API_VERSION,
                                          max_retries=0)
    messages = [{"role": "user", "content": "Where is my order?"}]
    answers = [
        await asyncio.to_thread(lambda: sync_openai.chat.completions.create(model="chat", messages=messages)),
        await asyncio.to_thread(lambda: sync_azure.chat.completions.create(model="chat", messages=messages)),
        await async_openai.chat.completions.create(model="chat", messages=messages),
        await async_azure.chat.completions.create(model="chat", messages=messages),
    ]
    for answer in answers:
        assert answer.model == "gpt-4o-mini-2024-07-18"  # the upstream's own, not the alias nor the deployment
        assert answer.choices[0].message.content.startswith("[prod-chat] Re: Where is my order?")
        assert answer.usage.prompt_tokens > 0
    models = await asyncio.to_thread(lambda: [m.id for m in sync_openai.models.list()])
    assert models == ["chat"]
    await async_openai.close()
    await async_azure.close()


async def test_a_request_id_comes_back_and_the_call_is_in_the_ledger_as_a_gateway_run(gateway):
    key = await gateway.tenant("acme")
    client = openai.AsyncOpenAI(base_url=f"{gateway.base}/api/v1", api_key=key, max_retries=0)
    raw = await client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "hello"}])
    request_id = raw.headers["x-tenantflow-request-id"]
    answer = raw.parse()
    records = await gateway.svc.stores.usage.list_for_run("acme", request_id)
    assert [(r.flow_id, r.step_id, r.model, r.prompt_tokens, r.completion_tokens) for r in records] == [
        ("gateway", "chat", "prod-chat", answer.usage.prompt_tokens, answer.usage.completion_tokens)]
    assert records[0].cost is not None and records[0].cost > 0  # priced as gpt-4o-mini by prefix
    run = await gateway.svc.stores.runs.get("acme", request_id)
    assert (run.trigger, run.flow_id, run.status, run.steps[0].id) == ("gateway", "gateway", "succeeded", "chat")
    await client.close()


@pytest.mark.parametrize("headers", [{"api-key": "{key}"}, {"x-api-key": "{key}"}])
async def test_each_key_header_is_accepted(gateway, headers):
    import httpx

    key = await gateway.tenant("acme")
    async with httpx.AsyncClient() as http:
        answer = await http.get(f"{gateway.base}/api/v1/models",
                                headers={k: v.format(key=key) for k, v in headers.items()})
        assert answer.status_code == 200 and [m["id"] for m in answer.json()["data"]] == ["chat"]
        refused = await http.get(f"{gateway.base}/api/v1/models", headers={"api-key": key[:-2] + "xx"})
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        assert refused.headers["x-tenantflow-request-id"].startswith("gw-")


async def test_parse_with_a_pydantic_model_and_tools_pass_through(gateway):
    class Order(BaseModel):
        order_id: str
        items: int

    key = await gateway.tenant("acme")
    client = openai.AsyncOpenAI(base_url=f"{gateway.base}/api/v1", api_key=key, max_retries=0)
    parsed = await client.chat.completions.parse(model="chat", response_format=Order,
                                                 messages=[{"role": "user", "content": "Order 42, 3 items"}])
    assert isinstance(parsed.choices[0].message.parsed, Order)
    tools = [{"type": "function", "function": {"name": "order_status", "parameters": {
        "type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}}]
    called = await client.chat.completions.create(model="chat", tools=tools, tool_choice="required", n=2,
                                                  messages=[{"role": "user", "content": "Where is order 42?"}])
    assert len(called.choices) == 2
    call = called.choices[0].message.tool_calls[0]
    assert call.function.name == "order_status" and "order_id" in call.function.arguments
    await client.close()


async def test_gateway_usage_shows_beside_flow_usage_in_the_usage_api_and_the_dashboard(gateway):
    import httpx

    key = await gateway.tenant("acme", price_as="gpt-4o")
    client = openai.AsyncOpenAI(base_url=f"{gateway.base}/api/v1", api_key=key, max_retries=0)
    served = await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
    await client.close()
    async with httpx.AsyncClient(timeout=30) as http:
        ran = await http.post(f"{gateway.base}/api/flows/grounded-answer/runs", headers={"x-api-key": key},
                              json={"inputs": {"question": "Why?", "passages": ["Because."]}})
        assert ran.status_code == 200
        usage = (await http.get(f"{gateway.base}/api/usage", params={"group_by": "flow"},
                                headers={"x-api-key": key})).json()
        dashboard = await http.get(f"{gateway.base}/api/dashboard", headers={"x-api-key": key})
    rows = {row["flow"]: row for row in usage["rows"]}
    assert set(rows) == {"gateway", "grounded-answer"}
    assert rows["gateway"]["total_tokens"] == served.usage.total_tokens and rows["gateway"]["runs"] == 1
    gpt_4o = gateway.svc.prices.price("acme", "gpt-4o")
    from decimal import Decimal

    from shared.engine.usage import TokenUsage

    expected = gpt_4o.cost(TokenUsage(served.usage.prompt_tokens, served.usage.completion_tokens))
    assert Decimal(str(rows["gateway"]["cost"])) == expected  # --price-as overrides the served model
    assert dashboard.status_code == 200 and "gateway" in dashboard.text


async def test_the_functions_host_path_sends_a_streamed_answer_whole(gateway):
    """What the Functions host runs: the registered function itself, with an azure.functions HttpRequest."""
    import json

    import azure.functions as func

    from shared.functions.local_server import registered_functions

    key = await gateway.tenant("acme")
    function = next(f.get_user_function() for f in registered_functions() if f.get_function_name() ==
                    "azure_chat_completions")
    request = func.HttpRequest("POST", "http://localhost/api/openai/deployments/chat/chat/completions",
                               headers={"api-key": key}, params={"api-version": API_VERSION},
                               route_params={"alias": "chat"}, body=json.dumps({
                                   "stream": True, "messages": [{"role": "user", "content": "hi"}]}).encode())
    answer = await function(request)
    assert answer.status_code == 200 and answer.headers["x-tenantflow-request-id"].startswith("gw-")
    events = answer.get_body().decode().strip().split("\n\n")
    assert events[-1] == "data: [DONE]" and all(e.startswith("data: ") for e in events)
    assert all(json.loads(e[6:])["usage"] is None for e in events[:-1])  # no include_usage asked: none passed on


async def test_a_model_no_price_file_knows_is_recorded_with_cost_null_never_zero(gateway, caplog):
    key = await gateway.tenant("acme", alias="odd", deployment="mystery")
    client = openai.AsyncOpenAI(base_url=f"{gateway.base}/api/v1", api_key=key, max_retries=0)
    raw = await client.chat.completions.with_raw_response.create(
        model="odd", messages=[{"role": "user", "content": "hi"}])
    await client.close()
    assert raw.parse().model == "acme-llm-7"
    (record,) = await gateway.svc.stores.usage.list_for_run("acme", raw.headers["x-tenantflow-request-id"])
    assert record.cost is None and record.total_tokens > 0
    assert "no price for model acme-llm-7/mystery" in caplog.text
