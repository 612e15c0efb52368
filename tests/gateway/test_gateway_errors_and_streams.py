"""Errors in the OpenAI shape (each SDK error class), upstream errors passed on, streams relayed with usage
recorded exactly once, and isolation between tenants."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest

API_VERSION = "2024-10-21"
UPSTREAM_KEY = "sk-upstream-secret-0123456789abcdef"


def async_client(gateway, key, azure=False):
    if azure:
        return openai.AsyncAzureOpenAI(azure_endpoint=f"{gateway.base}/api", api_key=key, api_version=API_VERSION,
                                       max_retries=0)
    return openai.AsyncOpenAI(base_url=f"{gateway.base}/api/v1", api_key=key, max_retries=0)


async def usage_of(gateway, tenant, request_id):
    return await gateway.svc.stores.usage.list_for_run(tenant, request_id)


async def test_each_error_class_of_the_sdk(gateway):
    key = await gateway.tenant("acme")
    client = async_client(gateway, key)
    hello = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.AuthenticationError) as unauthenticated:
        await async_client(gateway, "tf_nope").chat.completions.create(model="chat", messages=hello)
    assert unauthenticated.value.code == "invalid_api_key"
    with pytest.raises(openai.NotFoundError) as unknown:
        await client.chat.completions.create(model="no-such-alias", messages=hello)
    assert unknown.value.code == "model_not_found" and unknown.value.param == "model"
    with pytest.raises(openai.BadRequestError) as invalid:  # the upstream's own 400, passed on
        await client.chat.completions.create(model="chat", messages=hello, temperature=3)
    assert invalid.value.status_code == 400
    with pytest.raises(openai.RateLimitError) as limited:  # the upstream's 429 with its retry-after, not retried
        await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "[[fault:429]]"}])
    assert limited.value.response.headers["retry-after"] == "1"
    assert limited.value.response.headers["retry-after-ms"] == "50"
    assert limited.value.code == "429"
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "[[fault:500]]"}])
    await client.close()


async def test_a_suspended_tenant_is_refused(gateway):
    key = await gateway.tenant("acme")
    await gateway.svc.stores.tenants.set_status("acme", "suspended")
    gateway.svc.tenants.key_cache.clear()
    with pytest.raises(openai.PermissionDeniedError) as refused:
        await async_client(gateway, key).chat.completions.create(model="chat", messages=[
            {"role": "user", "content": "hi"}])
    assert refused.value.code == "tenant_suspended"


async def test_azure_route_without_api_version_is_a_400_and_bad_json_too(gateway):
    key = await gateway.tenant("acme")
    async with httpx.AsyncClient() as http:
        missing = await http.post(f"{gateway.base}/api/openai/deployments/chat/chat/completions",
                                  headers={"api-key": key}, json={"messages": [{"role": "user", "content": "x"}]})
        assert missing.status_code == 400 and missing.json()["error"]["param"] == "api-version"
        bad = await http.post(f"{gateway.base}/api/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                              content=b"{not json")
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
        assert bad.headers["x-tenantflow-request-id"].startswith("gw-")
        lone = await http.post(f"{gateway.base}/api/v1/chat/completions", headers={"x-api-key": key},
                               content=b'{"model": "chat", "messages": [{"role": "user", "content": "\\ud800 hi"}]}')
        assert lone.status_code == 400 and lone.json()["error"]["code"] == "invalid_text"  # never a 500


async def test_the_upstream_key_never_comes_back_even_when_the_upstream_echoes_it(gateway):
    key = await gateway.tenant("acme")
    async with httpx.AsyncClient() as http:
        answer = await http.post(f"{gateway.base}/api/v1/chat/completions", headers={"x-api-key": key}, json={
            "model": "chat", "messages": [{"role": "user", "content": f"echo {UPSTREAM_KEY}"}], "temperature": 9})
    assert answer.status_code == 400
    assert UPSTREAM_KEY not in answer.text and UPSTREAM_KEY[:12] not in answer.text


async def test_tenant_a_cannot_use_tenant_bs_alias(gateway):
    await gateway.tenant("tenant-b", alias="b-only")
    key_a = await gateway.tenant("tenant-a")
    with pytest.raises(openai.NotFoundError):
        await async_client(gateway, key_a).chat.completions.create(model="b-only", messages=[
            {"role": "user", "content": "hi"}])
    with pytest.raises(openai.NotFoundError):
        await async_client(gateway, key_a, azure=True).chat.completions.create(model="b-only", messages=[
            {"role": "user", "content": "hi"}])
    assert [m.id async for m in async_client(gateway, key_a).models.list()] == ["chat"]


@pytest.mark.parametrize("azure", [False, True], ids=["openai", "azure"])
async def test_a_stream_is_relayed_with_usage_when_asked_and_recorded_once(gateway, azure):
    key = await gateway.tenant("acme")
    client = async_client(gateway, key, azure)
    raw = await client.chat.completions.with_raw_response.create(
        model="chat", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Tell me a story about a lighthouse keeper"}])
    request_id = raw.headers["x-tenantflow-request-id"]
    chunks = [chunk async for chunk in raw.parse()]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("[prod-chat] Re: Tell me a story")
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    assert {c.model for c in chunks} == {"gpt-4o-mini-2024-07-18"}
    records = await usage_of(gateway, "acme", request_id)
    assert [(r.prompt_tokens, r.completion_tokens) for r in records] == [
        (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens)]
    await client.close()


async def test_a_stream_without_include_usage_gets_no_usage_chunk_but_is_still_metered(gateway):
    key = await gateway.tenant("acme")
    client = async_client(gateway, key)
    raw = await client.chat.completions.with_raw_response.create(
        model="chat", stream=True, messages=[{"role": "user", "content": "Stream this please"}])
    chunks = [chunk async for chunk in raw.parse()]
    assert all(c.usage is None for c in chunks) and all(c.choices for c in chunks)
    records = await usage_of(gateway, "acme", raw.headers["x-tenantflow-request-id"])
    assert len(records) == 1 and records[0].completion_tokens > 0
    await client.close()


async def leave_mid_stream(gateway, key: str, faults: str) -> tuple[str, list]:
    """Streams a long answer (~40 chunks, 20 ms apart, plus `faults`), reads one chunk and goes away; returns the
    request id and the ledger's records of it when the client left, once its charge is in (or after 5 s)."""
    body = {"model": "chat", "stream": True, "max_tokens": 400,
            "messages": [{"role": "user", "content": f"[[fault:chunk-delay=20]]{faults} " + "write at length " * 40}]}
    async with httpx.AsyncClient() as http:
        async with http.stream("POST", f"{gateway.base}/api/v1/chat/completions", headers={"x-api-key": key},
                               json=body) as response:
            request_id = response.headers["x-tenantflow-request-id"]
            async for _ in response.aiter_bytes():
                break  # one chunk, then the client goes away
    when_left = await usage_of(gateway, "acme", request_id)
    for _ in range(100):
        if await usage_of(gateway, "acme", request_id):
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # a second charge, if there were one, would be in by now
    return request_id, when_left


async def test_a_client_that_leaves_mid_stream_is_charged_exactly_once(gateway):
    key = await gateway.tenant("acme")
    request_id, when_left = await leave_mid_stream(gateway, key, "")
    assert when_left == []  # still streaming upstream
    records = await usage_of(gateway, "acme", request_id)
    assert len(records) == 1 and records[0].completion_tokens > 0
    assert records[0].estimated is False  # the real usage chunk, read after the client left
    run = await gateway.svc.stores.runs.get("acme", request_id)
    assert run.status == "succeeded" and run.usage["total_tokens"] == records[0].total_tokens
    assert "estimated" not in run.usage


async def test_a_client_that_leaves_a_stream_whose_upstream_never_reports_usage_is_charged_an_estimate_once(
        gateway_on_each_store):
    gateway = gateway_on_each_store
    key = await gateway.tenant("acme")
    request_id, _ = await leave_mid_stream(gateway, key, "[[fault:stream-break]]")  # no usage chunk ever comes
    records = await usage_of(gateway, "acme", request_id)
    assert len(records) == 1 and records[0].prompt_tokens > 0 and records[0].completion_tokens > 0
    assert records[0].estimated is True  # on the ledger row itself, not only on the run
    run = await gateway.svc.stores.runs.get("acme", request_id)
    assert run.usage["estimated"] is True and run.usage["total_tokens"] == records[0].total_tokens


async def test_an_upstream_that_breaks_off_mid_stream_is_charged_an_estimate_marked_estimated(gateway):
    key = await gateway.tenant("acme")
    client = async_client(gateway, key)
    raw = await client.chat.completions.with_raw_response.create(
        model="chat", stream=True, messages=[{"role": "user", "content": "[[fault:stream-break]] tell me more"}])
    chunks = []
    with pytest.raises(openai.APIError):  # the stream ends without [DONE]
        async for chunk in raw.parse():
            chunks.append(chunk)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    request_id = raw.headers["x-tenantflow-request-id"]
    records = await usage_of(gateway, "acme", request_id)
    assert len(records) == 1 and records[0].prompt_tokens > 0 and records[0].completion_tokens > 0
    assert records[0].estimated is True
    run = await gateway.svc.stores.runs.get("acme", request_id)
    assert run.usage["estimated"] is True and run.steps[0].usage["estimated"] is True
    await client.close()


async def test_one_span_per_request_with_tenant_and_gen_ai_attributes_never_the_prompt(gateway):
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from shared.telemetry import Telemetry

    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    gateway.svc.gateway.tracing = Telemetry(provider, MeterProvider())
    key = await gateway.tenant("acme")
    client = async_client(gateway, key)
    secret_prompt = "canary-prompt-7f3a"
    answer = await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": secret_prompt}])
    stream = await client.chat.completions.create(model="chat", stream=True,
                                                  messages=[{"role": "user", "content": secret_prompt}])
    [chunk async for chunk in stream]
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    await client.close()
    finished = spans.get_finished_spans()
    assert [s.name for s in finished] == ["chat chat", "chat chat", "chat nope"]
    ok = dict(finished[0].attributes)
    assert ok["tenant.id"] == "acme" and ok["gen_ai.request.model"] == "chat"
    assert ok["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18" and ok["gen_ai.system"] == "az.ai.openai"
    assert ok["gen_ai.usage.input_tokens"] == answer.usage.prompt_tokens
    assert dict(finished[1].attributes)["gen_ai.usage.output_tokens"] > 0  # the stream's span ends at its usage
    assert dict(finished[2].attributes)["error.type"] == "model_not_found"
    assert all(secret_prompt not in json.dumps(dict(s.attributes)) for s in finished)
