"""CPU per model call in this process: the SDK's default httpx client (wave 1) against the checked aiohttp client
(shared/connections/outbound.py), both through the openai SDK to the emulator, which runs in another process so
its CPU is not counted. Sequential calls, one warm client each; figures are process CPU time per call."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import openai

from shared.connections.allowlist import EndpointAllowlist
from shared.connections.openai_model import ClientCache, OpenAIModelPort
from shared.connections.outbound import checked_http_client
from shared.engine.ports import ChatRequest, Connection
from shared.secret import Secret

ROOT = Path(__file__).resolve().parent.parent
CALLS = int(os.environ.get("TENANTFLOW_BENCH_MODEL_CALLS", "400"))


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


async def cpu_per_call_us(port: OpenAIModelPort, endpoint: str, calls: int) -> float:
    request = ChatRequest(Connection("c", "azure_openai", endpoint, Secret("bench-key")), "gpt-4o-mini",
                          [{"role": "user", "content": "hello"}], step_id="s")
    try:
        for _ in range(20):  # warm: connection, client, imports
            await port.chat(request)
        started = time.process_time()
        for _ in range(calls):
            await port.chat(request)
        return round((time.process_time() - started) / calls * 1e6, 1)
    finally:
        await port.close()


async def measure(endpoint: str, calls: int) -> dict[str, Any]:
    policy = EndpointAllowlist(("127.0.0.1",))
    httpx_port = OpenAIModelPort(policy, ClientCache(openai.DefaultAsyncHttpxClient))
    aiohttp_port = OpenAIModelPort(policy, ClientCache(lambda: checked_http_client(policy)))
    httpx_us = await cpu_per_call_us(httpx_port, endpoint, calls)
    aiohttp_us = await cpu_per_call_us(aiohttp_port, endpoint, calls)
    return {"model_call_cpu_httpx_us": httpx_us, "model_call_cpu_checked_aiohttp_us": aiohttp_us}


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
