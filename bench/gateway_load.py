"""The OpenAI-compatible gateway under load: `tenantflow serve` (a subprocess) relaying chat completions to the
emulator (another subprocess), against the same request sent to the emulator directly, on SQLite and on PostgreSQL.

For each store and concurrency 1 and 16, a closed loop (bench.http_load.closed_loop) sends the same OpenAI request
body, once straight to the emulator's deployment route and right after through the gateway (`POST
/api/v1/chat/completions`, model = an alias of that deployment), and prints requests/s, p50/p99, the latency the
gateway adds (gateway minus direct) and CPU ms per request of the serve process, the emulator and (on PostgreSQL)
the cluster: the postmaster and all its children, as in bench.http_load. Every gateway request is authenticated,
resolved, metered (a run record and a ledger record, one transaction) and priced. PostgreSQL runs on the bench's
own cluster (bench.http_load's `Cluster`, production roles, migrated), which needs root; otherwise that case is
skipped with the reason printed. Only 127.0.0.1 is addressed. `python -m bench.gateway_load` runs it alone.
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

from bench.http_load import (
    SCRIPT,
    CpuMeter,
    children,
    closed_loop,
    free_port,
    own_cluster,
    run_cli,
    wait_for,
    warm_up,
)
from tests.backends.pg_cluster import Cluster

CONCURRENCY = (1, 16)
WARM_UP = 50
MESSAGES = [{"role": "user", "content": "What is the status of order 7?"}]
GATEWAY_BODY = json.dumps({"model": "chat", "messages": MESSAGES, "max_completion_tokens": 32}).encode()
DIRECT_BODY = json.dumps({"model": "gpt-4o-mini", "messages": MESSAGES, "max_completion_tokens": 32}).encode()
DIRECT_HEADERS = {"api-key": "bench-key", "content-type": "application/json"}


async def measure_store(store: str, env: dict[str, str], emulator: subprocess.Popen[bytes], emulator_url: str,
                        cluster: Cluster | None) -> list[dict[str, Any]]:
    """One store: a tenant with an alias of the emulator's deployment, a serve process, then direct and gateway
    loops at each concurrency."""
    key = run_cli(env, "tenants", "add", "bench").strip().splitlines()[-1]
    run_cli(env, "credentials", "set", "bench", "foundry", "--kind", "azure_openai", "--endpoint", emulator_url,
            "--api-key-stdin", stdin="bench-key")
    run_cli(env, "models", "set", "bench", "chat", "--credential", "foundry", "--deployment", "gpt-4o-mini")
    serve_port = free_port()
    serve = subprocess.Popen([str(SCRIPT), "serve", "--port", str(serve_port)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows: list[dict[str, Any]] = []
    try:
        wait_for(f"http://127.0.0.1:{serve_port}/api/health", serve)
        gateway_url = f"http://127.0.0.1:{serve_port}/api/v1/chat/completions"
        gateway_headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
        direct_url = f"{emulator_url}/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21"
        await warm_up(gateway_url, GATEWAY_BODY, gateway_headers, WARM_UP)
        groups: dict[str, Any] = {"serve": lambda: [serve.pid], "emulator": lambda: [emulator.pid]}
        if cluster is not None:
            postmaster = cluster.postmaster_pid()
            groups["postgres"] = lambda: [postmaster, *children(postmaster)]
        meter = CpuMeter(groups)
        direct_meter = CpuMeter({"emulator": lambda: [emulator.pid]})

        async def begin() -> None:
            meter.start()

        async def begin_direct() -> None:
            direct_meter.start()

        for concurrency in CONCURRENCY:
            direct = await closed_loop(direct_url, DIRECT_BODY, DIRECT_HEADERS, concurrency, begin_direct)
            direct_cpu = direct_meter.stop()
            loop = await closed_loop(gateway_url, GATEWAY_BODY, gateway_headers, concurrency, begin)
            cpu = meter.stop()
            rows.append({"store": store, "c": concurrency, "direct": direct, "loop": loop,
                         "direct_cpu": direct_cpu["emulator"] * 1000 / direct.runs,
                         "cpu": {name: seconds * 1000 / loop.runs for name, seconds in cpu.items()}})
    finally:
        serve.terminate()
        serve.wait(timeout=10)
    return rows


async def measure() -> list[dict[str, Any]]:
    work = Path(tempfile.mkdtemp(prefix="tf-gateway-load-"))
    emulator_port = free_port()
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    base = {k: v for k, v in os.environ.items() if not k.startswith("TENANTFLOW_") and k != "AzureWebJobsStorage"}
    base.update({"TENANTFLOW_ALLOWED_HOSTS": "127.0.0.1", "TENANTFLOW_DEFAULT_ENDPOINT": emulator_url})
    emulator = subprocess.Popen([str(SCRIPT), "emulator", "--port", str(emulator_port)], env=base,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows: list[dict[str, Any]] = []
    try:
        wait_for(f"{emulator_url}/health", emulator)
        sqlite_env = {**base, "TENANTFLOW_STORE": "sqlite", "TENANTFLOW_SQLITE_PATH": str(work / "bench.db")}
        rows += await measure_store("sqlite", sqlite_env, emulator, emulator_url, None)
        async with own_cluster() as postgres:
            if postgres is not None:
                cluster, pg_env, _ = postgres
                rows += await measure_store("postgres", {**base, **pg_env}, emulator, emulator_url, cluster)
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    return rows


def report(rows: list[dict[str, Any]]) -> dict[str, Any]:
    print("\nGateway load (closed loop; added = gateway - the direct upstream loop run just before it)")
    print(f"{'path':<8} {'store':<8} {'c':>3} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'+p50 ms':>8} {'+p99 ms':>8} "
          f"{'serve cpu':>10} {'emu cpu':>8} {'pg cpu':>7} {'fail':>5}")
    figures: dict[str, Any] = {}
    for row in rows:
        direct, loop = row["direct"], row["loop"]
        print(f"{'direct':<8} {row['store']:<8} {row['c']:>3} {direct.rate:>8.0f} {direct.percentile(0.5):>8.2f} "
              f"{direct.percentile(0.99):>8.2f} {'':>8} {'':>8} {'':>10} {row['direct_cpu']:>8.2f} {'':>7} "
              f"{direct.failures:>5}")
        added50 = loop.percentile(0.5) - direct.percentile(0.5)
        added99 = loop.percentile(0.99) - direct.percentile(0.99)
        pg = row["cpu"].get("postgres")
        print(f"{'gateway':<8} {row['store']:<8} {row['c']:>3} {loop.rate:>8.0f} {loop.percentile(0.5):>8.2f} "
              f"{loop.percentile(0.99):>8.2f} {added50:>8.2f} {added99:>8.2f} {row['cpu']['serve']:>10.2f} "
              f"{row['cpu']['emulator']:>8.2f} {'' if pg is None else f'{pg:.2f}':>7} {loop.failures:>5}")
        name = f"gateway_{row['store']}_c{row['c']}"
        figures[f"{name}_requests_per_s"] = round(loop.rate)
        figures[f"{name}_added_p50_ms"] = round(added50, 2)
        figures[f"{name}_added_p99_ms"] = round(added99, 2)
        figures[f"{name}_serve_cpu_ms_per_request"] = round(row["cpu"]["serve"], 2)
        if pg is not None:
            figures[f"{name}_postgres_cpu_ms_per_request"] = round(pg, 2)
    print("cpu columns: ms of CPU per request in each process; pg cpu: the PostgreSQL cluster, postmaster and children "
          "(the peer, LiteLLM proxy, measured on this box: +12.6-19 ms p50 at c=1, 9-19 ms CPU per request)\n")
    return figures


def run() -> dict[str, Any]:
    return report(asyncio.run(measure()))


if __name__ == "__main__":
    run()
