"""The openai model port against the emulator: retries, non-retried failures, client cache, usage."""

from __future__ import annotations

import pytest

from shared.connections.allowlist import EndpointAllowlist
from shared.connections.openai_model import OpenAIModelPort, retry_delay
from shared.emulator.server import reply_for
from shared.engine.ports import ChatRequest, Connection, StepFailure
from shared.secret import Secret


@pytest.fixture
async def port():
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    model = OpenAIModelPort(EndpointAllowlist(("127.0.0.1",)), sleep=fake_sleep)
    model.sleeps = sleeps
    yield model
    await model.close()


def request(emulator, text, key="k1", **over):
    connection = Connection("c", "azure_openai", emulator.base_url, Secret(key))
    return ChatRequest(connection=connection, model="gpt-4o-mini", messages=[{"role": "user", "content": text}],
                       step_id="s", **over)


async def test_success_reports_usage_and_attempt(emulator, port):
    result = await port.chat(request(emulator, "hello"))
    assert result.content == reply_for("gpt-4o-mini", [{"role": "user", "content": "hello"}])
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens > 0
    assert (result.attempt, result.endpoint_host, result.finish_reason) == (1, "127.0.0.1", "stop")


async def test_429_is_retried_after_retry_after_ms(emulator, port):
    result = await port.chat(request(emulator, "[[fault:429;times=2]] busy"))
    assert result.attempt == 3 and port.sleeps == [0.05, 0.05]


async def test_insufficient_quota_is_not_retried(emulator, port):
    before = emulator.stats()["requests"]
    with pytest.raises(StepFailure) as caught:
        await port.chat(request(emulator, "[[fault:429-quota]] x"))
    assert caught.value.code == "insufficient_quota" and "not retried" in str(caught.value)
    assert emulator.stats()["requests"] - before == 1 and port.sleeps == []


async def test_content_filter_is_not_retried(emulator, port):
    with pytest.raises(StepFailure) as caught:
        await port.chat(request(emulator, "[[content_filter]] x"))
    assert caught.value.code == "content_filter" and port.sleeps == []


async def test_server_errors_and_disconnects_are_retried_then_fail_clearly(emulator, port):
    result = await port.chat(request(emulator, "[[fault:500;times=1]] flaky"))
    assert result.attempt == 2
    with pytest.raises(StepFailure) as caught:
        await port.chat(request(emulator, "[[fault:disconnect]] gone"))
    assert caught.value.code == "model_unavailable" and "after 4 attempts" in str(caught.value)


async def test_refused_endpoint_never_reaches_the_network(port):
    connection = Connection("c", "azure_openai", "https://evil.example.com", Secret("k"))
    with pytest.raises(StepFailure) as caught:
        await port.chat(ChatRequest(connection, "m", [{"role": "user", "content": "x"}]))
    assert caught.value.code == "endpoint_refused"


async def test_one_client_per_endpoint_and_key_and_rotation_replaces_it(emulator, port):
    await port.chat(request(emulator, "a", key="k1"))
    first = port.clients.get(request(emulator, "a", key="k1").connection)
    await port.chat(request(emulator, "b", key="k1"))
    assert port.clients.get(request(emulator, "b", key="k1").connection) is first
    await port.chat(request(emulator, "c", key="k2-rotated"))
    assert len([k for k in port.clients.clients if k[1] == emulator.base_url]) == 1
    assert port.clients.get(request(emulator, "c", key="k2-rotated").connection) is not first


def test_retry_delay_prefers_ms_then_seconds():
    assert retry_delay({"retry-after-ms": "250", "retry-after": "9"}, 1) == 0.25
    assert retry_delay({"retry-after": "2"}, 1) == 2.0
    assert 0 < retry_delay({}, 3) <= 2.0
