"""CPU per model call in this process, to the emulator (another process, so its CPU is not counted):
- the model port as runs use it: the chat JSON posted through the checked aiohttp session;
- the floor the issue measured: the openai SDK's `chat.completions.create` with its aiohttp client (over the same
  checked session), and with its default httpx client (wave 1).
Sequential calls, one warm client each, interleaved rounds; figures are the median process CPU time per call."""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import openai

from shared.connections.allowlist import EndpointAllowlist
from shared.connections.openai_model import OpenAIModelPort
from shared.engine.ports import ChatRequest, Connection
from shared.secret import Secret

ROOT = Path(__file__).resolve().parent.parent
CALLS = int(os.environ.get("TENANTFLOW_BENCH_MODEL_CALLS", "200"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_emulator(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, "-m", "shared.cli", "emulator", "--port", str(port)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("the emulator did not start")


async def cpu_per_call_us(call: Any, calls: int) -> float:
    started = time.process_time()
    for _ in range(calls):
        await call()
    return (time.process_time() - started) / calls * 1e6


async def measure(endpoint: str, calls: int, rounds: int = 5) -> dict[str, Any]:
    policy = EndpointAllowlist(("127.0.0.1",))
    port = OpenAIModelPort(policy)
    request = ChatRequest(Connection("c", "azure_openai", endpoint, Secret("bench-key")), "gpt-4o-mini",
                          [{"role": "user", "content": "hello"}], step_id="s")
    body = {"model": "gpt-4o-mini", "messages": request.messages, "temperature": 0.7}
    sdk_aiohttp = port.clients.get(request.connection).sdk()
    sdk_httpx = openai.AsyncAzureOpenAI(azure_endpoint=endpoint, api_version="2024-10-21", api_key="bench-key",
                                        max_retries=0)
    ways = {"model_port": lambda: port.chat(request),
            "sdk_aiohttp": lambda: sdk_aiohttp.chat.completions.create(**body),
            "sdk_httpx": lambda: sdk_httpx.chat.completions.create(**body)}
    figures: dict[str, list[float]] = {name: [] for name in ways}
    try:
        for call in ways.values():  # warm: connections, clients, imports
            for _ in range(20):
                await call()
        for _ in range(rounds):
            for name, call in ways.items():
                figures[name].append(await cpu_per_call_us(call, calls))
    finally:
        await port.close()
        await sdk_httpx.close()
    return {f"model_call_cpu_{name}_us": round(statistics.median(values), 1) for name, values in figures.items()}


def run(calls: int = CALLS) -> dict[str, Any]:
    port = free_port()
    emulator = start_emulator(port)
    try:
        return asyncio.run(measure(f"http://127.0.0.1:{port}", calls))
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)


if __name__ == "__main__":
    print(run())
