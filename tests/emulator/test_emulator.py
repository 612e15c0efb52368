"""The emulator through the real openai SDK over HTTP."""

from __future__ import annotations

import json
import time

import openai
import pytest

from shared.emulator.server import fingerprint, reply_for, running_emulator
from shared.emulator.tokens import count_message_tokens, count_tokens, split_tokens

KEY = "emulator-test-key"


@pytest.fixture(scope="module")
def emulator():
    with running_emulator(api_keys={KEY}) as handle:
        yield handle


def azure(emulator, key=KEY, retries=0):
    return openai.AsyncAzureOpenAI(azure_endpoint=emulator.base_url, api_key=key, api_version="2024-10-21",
                                   max_retries=retries)


def test_token_estimate_is_deterministic_and_splits_long_words():
    assert count_tokens("Hello, world!") == 6  # Hell·o , worl·d !
    assert "".join(split_tokens("Internationalization is hard.")) == "Internationalization is hard."
    assert count_message_tokens([{"role": "user", "content": "hi"}]) == 3 + 3 + 1 + 1


async def test_azure_route_reply_and_usage(emulator):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is Tenantflow?"}]
    response = await azure(emulator).chat.completions.create(model="gpt-4o-mini", messages=messages)
    expected = reply_for("gpt-4o-mini", messages)
    assert response.choices[0].message.content == expected
    assert response.choices[0].finish_reason == "stop"
    assert response.usage.prompt_tokens == count_message_tokens(messages)
    assert response.usage.completion_tokens == count_tokens(expected)
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens
    assert response.choices[0].content_filter_results["hate"] == {"filtered": False, "severity": "safe"}


async def test_v1_route_with_bearer_token(emulator):
    client = openai.AsyncOpenAI(base_url=emulator.base_url + "/openai/v1", api_key=KEY, max_retries=0)
    response = await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "v1"}])
    assert response.choices[0].message.content.startswith("[gpt-4o] Re: v1 #")


async def test_wrong_key_is_refused(emulator):
    with pytest.raises(openai.AuthenticationError):
        await azure(emulator, key="wrong").chat.completions.create(model="m", messages=[{"role": "user",
                                                                                          "content": "x"}])


async def test_stream_ends_with_usage_chunk(emulator):
    messages = [{"role": "user", "content": "stream this please"}]
    stream = await azure(emulator).chat.completions.create(model="o3-mini", messages=messages, stream=True,
                                                           stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply_for("o3-mini", messages)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens_details.reasoning_tokens == 16
    assert chunks[-1].usage.completion_tokens == count_tokens(text) + 16


async def test_json_object_and_truncation(emulator):
    messages = [{"role": "user", "content": "give json"}]
    response = await azure(emulator).chat.completions.create(model="m", messages=messages,
                                                             response_format={"type": "json_object"})
    assert json.loads(response.choices[0].message.content)["answer"] == reply_for("m", messages)
    short = await azure(emulator).chat.completions.create(model="m", messages=messages, max_completion_tokens=3)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 3


async def test_content_filter_is_a_400_with_its_code(emulator):
    with pytest.raises(openai.BadRequestError) as caught:
        await azure(emulator).chat.completions.create(model="m", messages=[
            {"role": "user", "content": "[[content_filter]] bad"}])
    assert caught.value.code == "content_filter"
    assert caught.value.body["innererror"]["code"] == "ResponsibleAIPolicyViolation"


async def test_429_once_then_sdk_retry_succeeds(emulator):
    before = emulator.stats()["requests"]
    response = await azure(emulator, retries=2).chat.completions.create(model="m", messages=[
        {"role": "user", "content": "[[fault:429;times=1]] retry me"}])
    assert response.choices[0].message.content.startswith("[m] Re: retry me")
    assert emulator.stats()["requests"] - before == 2


async def test_quota_500_and_disconnect_faults(emulator):
    client = azure(emulator)
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "[[fault:429-quota]]"}])
    assert caught.value.code == "insufficient_quota"
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}],
                                             extra_headers={"x-emulator-fault": "500"})
    with pytest.raises(openai.APIConnectionError):
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "[[fault:disconnect]]"}])


async def test_latency_fault_delays_and_stats_count_keys(emulator):
    started = time.perf_counter()
    await azure(emulator).chat.completions.create(model="slow", messages=[{"role": "user", "content": "x"}],
                                                  extra_headers={"x-emulator-fault": "latency=300"})
    assert time.perf_counter() - started >= 0.3
    stats = emulator.stats()
    assert stats["by_deployment"]["slow"] == 1 and fingerprint(KEY) in stats["by_key_fingerprint"]
    assert KEY not in json.dumps(stats)
