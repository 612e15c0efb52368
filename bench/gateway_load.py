"""The OpenAI-compatible gateway under load: `tenantflow serve` (a subprocess, SQLite store) relaying chat
completions to the emulator (another subprocess), against the same request sent to the emulator directly.

For concurrency 1 and 16, a closed loop (bench.http_load.closed_loop) sends the same OpenAI request body, once
straight to the emulator's deployment route and right after through the gateway (`POST /api/v1/chat/completions`,
model = an alias of that deployment), and prints requests/s, p50/p99, the latency the gateway adds (gateway minus
direct) and CPU ms per request of the serve process. Every gateway request is authenticated, resolved, metered
(a run record and a ledger record, one transaction) and priced. Only 127.0.0.1 is addressed. `python -m
bench.gateway_load` runs it alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.http_load import SCRIPT, CpuMeter, closed_loop, free_port, new_client, run_cli, wait_for

CONCURRENCY = (1, 16)
WARM_UP = 50
MESSAGES = [{"role": "user", "content": "What is the status of order 7?"}]


async def measure() -> list[dict[str, Any]]:
    work = Path(tempfile.mkdtemp(prefix="tf-gateway-load-"))
    emulator_port, serve_port = free_port(), free_port()
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTFLOW_") and k != "AzureWebJobsStorage"}
    env.update({"TENANTFLOW_ALLOWED_HOSTS": "127.0.0.1", "TENANTFLOW_DEFAULT_ENDPOINT": emulator_url,
                "TENANTFLOW_STORE": "sqlite", "TENANTFLOW_SQLITE_PATH": str(work / "bench.db")})
    emulator = subprocess.Popen([str(SCRIPT), "emulator", "--port", str(emulator_port)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    serve: subprocess.Popen[bytes] | None = None
    rows: list[dict[str, Any]] = []
    try:
        wait_for(f"{emulator_url}/health", emulator)
        key = run_cli(env, "tenants", "add", "bench").strip().splitlines()[-1]
        run_cli(env, "credentials", "set", "bench", "foundry", "--kind", "azure_openai", "--endpoint", emulator_url,
                "--api-key-stdin", stdin="bench-key")
        run_cli(env, "models", "set", "bench", "chat", "--credential", "foundry", "--deployment", "gpt-4o-mini")
        serve = subprocess.Popen([str(SCRIPT), "serve", "--port", str(serve_port)], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(f"http://127.0.0.1:{serve_port}/api/health", serve)
        gateway_url = f"http://127.0.0.1:{serve_port}/api/v1/chat/completions"
        gateway_body = json.dumps({"model": "chat", "messages": MESSAGES, "max_completion_tokens": 32}).encode()
        gateway_headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
        direct_url = f"{emulator_url}/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21"
        direct_body = json.dumps({"model": "gpt-4o-mini", "messages": MESSAGES,
                                  "max_completion_tokens": 32}).encode()
        direct_headers = {"api-key": "bench-key", "content-type": "application/json"}
        async with new_client() as client:
            for _ in range(WARM_UP):
                answer = await client.post(gateway_url, content=gateway_body, headers=gateway_headers)
                if answer.status_code != 200:
                    raise RuntimeError(f"warm-up failed: {answer.status_code} {answer.text[:300]}")
        serve_pid = serve.pid
        meter = CpuMeter({"serve": lambda: [serve_pid], "emulator": lambda: [emulator.pid]})
        direct_meter = CpuMeter({"emulator": lambda: [emulator.pid]})

        async def begin() -> None:
            meter.start()

        async def begin_direct() -> None:
            direct_meter.start()

        for concurrency in CONCURRENCY:
            direct = await closed_loop(direct_url, direct_body, direct_headers, concurrency, begin_direct)
            direct_cpu = direct_meter.stop()
            loop = await closed_loop(gateway_url, gateway_body, gateway_headers, concurrency, begin)
            cpu = meter.stop()
            rows.append({"c": concurrency, "direct": direct, "loop": loop,
                         "direct_cpu": direct_cpu["emulator"] * 1000 / direct.runs,
                         "cpu": {name: seconds * 1000 / loop.runs for name, seconds in cpu.items()}})
    finally:
        for process in (serve, emulator):
            if process is not None:
                process.terminate()
                process.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    return rows


def report(rows: list[dict[str, Any]]) -> dict[str, Any]:
    print("\nGateway load (closed loop, SQLite; added = gateway - the direct upstream loop run just before it)")
    print(f"{'path':<8} {'c':>3} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'+p50 ms':>8} {'+p99 ms':>8} "
          f"{'serve cpu':>10} {'emu cpu':>8} {'fail':>5}")
    figures: dict[str, Any] = {}
    for row in rows:
        direct, loop = row["direct"], row["loop"]
        print(f"{'direct':<8} {row['c']:>3} {direct.rate:>8.0f} {direct.percentile(0.5):>8.2f} "
              f"{direct.percentile(0.99):>8.2f} {'':>8} {'':>8} {'':>10} {row['direct_cpu']:>8.2f} "
              f"{direct.failures:>5}")
        added50 = loop.percentile(0.5) - direct.percentile(0.5)
        added99 = loop.percentile(0.99) - direct.percentile(0.99)
        print(f"{'gateway':<8} {row['c']:>3} {loop.rate:>8.0f} {loop.percentile(0.5):>8.2f} "
              f"{loop.percentile(0.99):>8.2f} {added50:>8.2f} {added99:>8.2f} {row['cpu']['serve']:>10.2f} "
              f"{row['cpu']['emulator']:>8.2f} {loop.failures:>5}")
        name = f"gateway_sqlite_c{row['c']}"
        figures[f"{name}_requests_per_s"] = round(loop.rate)
        figures[f"{name}_added_p50_ms"] = round(added50, 2)
        figures[f"{name}_added_p99_ms"] = round(added99, 2)
        figures[f"{name}_serve_cpu_ms_per_request"] = round(row["cpu"]["serve"], 2)
    print("cpu columns: ms of CPU per request in each process (the peer, LiteLLM proxy, measured on this box: "
          "+12.6-19 ms p50 at c=1, 9-19 ms CPU per request)\n")
    return figures


def run() -> dict[str, Any]:
    return report(asyncio.run(measure()))


if __name__ == "__main__":
    run()
