"""Engine overhead per run of a 5-step flow with a zero-latency in-process model port (goal p50 ≤ 0.3 ms)."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from shared.engine.executor import FlowExecutor, RunContext
from shared.engine.parser import parse_flow
from shared.engine.ports import ChatRequest, ChatResult, Connection, CredentialSource, EndpointPolicy, ModelPort
from shared.engine.usage import TokenUsage
from shared.engine.validator import validate_flow
from shared.secret import Secret

FLOW = """
id: bench
inputs:
  ticket: {type: string, required: true}
steps:
  - {id: creds, kind: load_credential, name: foundry, result: cred}
  - id: connect
    kind: create_azure_ai_connection
    api_key: "{{ cred.api_key }}"
    endpoint: "{{ cred.endpoint }}"
    connection_variable: ai
  - {id: count, kind: declare_variable, name: n, type: integer, value: 0}
  - id: draft
    kind: chat_completion
    dynamic_connection: ai
    model: gpt-4o-mini
    system_prompt: "You answer for {{ tenant.name }}."
    user_prompt: "{{ inputs.ticket }}"
    result: reply
  - {id: bump, kind: set_variable, name: n, value: "{{ n + reply.usage.total_tokens }}"}
outputs:
  reply: "{{ reply.content }}"
  n: "{{ n }}"
"""


class InstantModel(ModelPort):
    async def chat(self, request: ChatRequest) -> ChatResult:
        return ChatResult("ok", "assistant", request.model, "stop", TokenUsage(10, 2, 12), "bench")


class InstantCredentials(CredentialSource):
    async def load(self, tenant_id: str, name: str) -> dict[str, Any]:
        return {"endpoint": "https://bench.openai.azure.com", "api_key": Secret("k"), "api_version": "2024-10-21"}


class Allow(EndpointPolicy):
    def check(self, endpoint: str) -> str:
        return endpoint


async def measure(runs: int = 3000) -> dict[str, float]:
    flow = validate_flow(parse_flow(FLOW, "bench.yaml"), {"default"})
    executor = FlowExecutor(InstantModel(), InstantCredentials(), Allow(), {"default": Connection("default")})
    context = RunContext("t", "Tenant", "r")
    inputs = {"ticket": "hello"}
    for _ in range(200):
        await executor.run(flow, inputs, context)
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        outcome = await executor.run(flow, inputs, context)
        samples.append((time.perf_counter() - started) * 1000)
        assert outcome.status == "succeeded"
    samples.sort()
    return {
        "engine_5_step_run_p50_ms": round(statistics.median(samples), 4),
        "engine_5_step_run_p99_ms": round(samples[int(len(samples) * 0.99)], 4),
    }


def run() -> dict[str, float]:
    return asyncio.run(measure())
