"""End-to-end HTTP load: `tenantflow serve` (a subprocess) in front of the emulator (another subprocess), against
the emulator called directly with the same client, on SQLite and on PostgreSQL.

For each store, flow (`one-step`: a single chat step; `support-reply`: the seed flow) and concurrency (1, 16, 64),
a closed loop of clients sends runs for at most REQUESTS[c] requests or SECONDS seconds, whichever comes first,
and prints:
- runs/s; p50 and p99 latency, and the latency *added* by Tenantflow: serve minus the direct upstream call at the
  same concurrency, measured right before it (each run makes one model call; the box is shared, so the two loops
  run back to back to see the same load);
- CPU ms per run of each process, from /proc/PID/stat utime+stime (+ cutime+cstime, its reaped children) before and
  after: serve, the emulator, and the PostgreSQL cluster (the postmaster and all its children: backends, WAL writer,
  autovacuum workers, also those that ended during the loop);
- on PostgreSQL, statements and explicit transactions (COMMIT/ROLLBACK) per run, from pg_stat_statements
  (track_utility on): the bench runs its own cluster with the extension preloaded. Outside a pipeline each statement
  is one round trip.
Only 127.0.0.1 is ever addressed. Run with the services of scripts/services.sh up (`make bench`), or alone:
`python -m bench.http_load`; BENCH_STORES (sqlite,postgres) and BENCH_CONCURRENCY (1,16,64) pick a subset.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from shared.settings import REPO_ROOT
from tests.backends.pg_cluster import Cluster, free_port

SCRIPT = Path(sys.executable).parent / "tenantflow"
CONCURRENCY = tuple(int(c) for c in os.environ.get("BENCH_CONCURRENCY", "1,16,64").split(","))
STORES = os.environ.get("BENCH_STORES", "sqlite,postgres").split(",")
REQUESTS = {1: 1500, 16: 3000, 64: 6000}
SECONDS = 6.0
WARM_UP = 30
TICK = os.sysconf("SC_CLK_TCK")
ONE_STEP_FLOW = """id: one-step
description: One chat completion on the shipped default connection
inputs:
  q: {type: string, required: true}
steps:
  - id: answer
    kind: chat_completion
    connection: default
    model: gpt-4o-mini
    user_prompt: "{{ inputs.q }}"
    max_completion_tokens: 32
    result: reply
outputs:
  reply: "{{ reply.content }}"
"""
FLOWS = {"one-step": {"q": "What is the status of order 7?"},
         "support-reply": {"ticket": "My invoice is wrong, please check order 7."}}


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # utime, stime, and cutime, cstime: the children it reaped (PostgreSQL's autovacuum workers, ended backends)
    return sum(int(f) for f in fields[11:15]) / TICK


def children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                    found.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
    return found


class CpuMeter:
    """CPU seconds of named process groups, between `start` and `stop`."""

    def __init__(self, groups: dict[str, Any]) -> None:
        self.groups = groups  # name → callable returning pids
        self.before: dict[str, dict[int, float]] = {}

    def snapshot(self) -> dict[str, dict[int, float]]:
        return {name: {pid: cpu_seconds(pid) for pid in pids()} for name, pids in self.groups.items()}

    def start(self) -> None:
        self.before = self.snapshot()

    def stop(self) -> dict[str, float]:
        after = self.snapshot()
        return {name: sum(value - self.before[name].get(pid, 0.0) for pid, value in after[name].items())
                for name in after}


@dataclass
class Loop:
    runs: int
    seconds: float
    latencies: list[float]
    failures: int

    @property
    def rate(self) -> float:
        return self.runs / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000 if ordered else float("nan")


def new_session(concurrency: int) -> aiohttp.ClientSession:
    """The load client: aiohttp, one kept-alive connection per concurrent client. (httpx's pool could not drive
    more than ~360 requests/s on this box, with p99 of seconds at c=64: it measured itself, not the server.)"""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency),
                                 timeout=aiohttp.ClientTimeout(total=60))


async def post(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    async with session.post(url, data=body, headers=headers) as response:
        return response.status, await response.read()


async def warm_up(url: str, body: bytes, headers: dict[str, str], requests: int = 30) -> None:
    """Sends `requests` one by one; any answer but 200 stops the bench, naming it."""
    async with new_session(1) as session:
        for _ in range(requests):
            status, answer = await post(session, url, body, headers)
            if status != 200:
                raise RuntimeError(f"warm-up failed: {status} {answer[:300]!r}")


async def closed_loop(url: str, body: bytes, headers: dict[str, str], concurrency: int,
                      on_start: Any = None) -> Loop:
    """`concurrency` clients, each sending its next request when the last one is answered. A fresh HTTP client per
    loop, its connections opened by one warm-up round (so no loop meets a connection the server closed while
    idle); `on_start` is awaited when the measured part begins. A transport error counts as a failure."""
    total = REQUESTS[concurrency]
    issued, failures = 0, 0
    latencies: list[float] = []
    async with new_session(concurrency) as session:
        await asyncio.gather(*[post(session, url, body, headers) for _ in range(concurrency)])

        async def worker() -> None:
            nonlocal issued, failures
            while issued < total and time.monotonic() < deadline:
                issued += 1
                started = time.perf_counter()
                try:
                    ok = (await post(session, url, body, headers))[0] == 200
                except aiohttp.ClientError:
                    ok = False
                latencies.append(time.perf_counter() - started)
                failures += not ok

        if on_start is not None:
            await on_start()
        deadline = time.monotonic() + SECONDS
        started = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        return Loop(len(latencies), time.perf_counter() - started, latencies, failures)


def run_cli(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    result = subprocess.run([str(SCRIPT), *args], env=env, input=stdin, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"tenantflow {args[0]} failed: {result.stderr.strip()}")
    return result.stdout


def wait_for(url: str, process: subprocess.Popen[bytes], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"{url} did not answer") from None
            time.sleep(0.1)


async def statements(admin_dsn: str, database: str) -> tuple[int, int]:
    """(all statements, COMMIT/ROLLBACK statements) run in `database` so far."""
    from psycopg import AsyncConnection

    async with await AsyncConnection.connect(admin_dsn, autocommit=True) as connection:
        row = await (await connection.execute(
            "SELECT coalesce(sum(calls), 0), coalesce(sum(calls) FILTER (WHERE query ILIKE 'commit%%' "
            "OR query ILIKE 'rollback%%'), 0) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
            "WHERE d.datname = %s", (database,))).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def postgres_settings(cluster: Cluster) -> tuple[dict[str, str], str]:
    """A migrated database with the production roles on the bench's cluster: (environment, database name)."""
    from psycopg.conninfo import conninfo_to_dict

    from tests.backends import postgres_backend
    from tests.backends.fixtures import settings_env

    os.environ["TENANTFLOW_TEST_POSTGRES_ADMIN_DSN"] = cluster.admin_dsn
    await postgres_backend.admin_execute(cluster.admin_dsn, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    settings = await postgres_backend.provision(Path(tempfile.mkdtemp()))
    assert settings.postgres_dsn is not None
    return settings_env(settings), str(conninfo_to_dict(settings.postgres_dsn.reveal())["dbname"])


@asynccontextmanager
async def own_cluster(options: str = "") -> AsyncIterator[tuple[Cluster, dict[str, str], str] | None]:
    """The bench's own PostgreSQL cluster, migrated with the production roles: (cluster, environment, database
    name), stopped and removed afterwards; None, with the reason printed, when not root (initdb runs as postgres)."""
    if os.geteuid() != 0:
        print("# postgres skipped: starting the bench's own cluster needs root", file=sys.stderr)
        yield None
        return
    cluster = Cluster(f"-c max_connections=100 {options}")
    cluster.start()
    try:
        env, database = await postgres_settings(cluster)
        yield cluster, env, database
    finally:
        cluster.stop()
        cluster.remove()


async def measure_store(store: str, env: dict[str, str], emulator: subprocess.Popen[bytes], emulator_url: str,
                        direct: Upstream, cluster: Cluster | None, database: str | None) -> list[dict[str, Any]]:
    key = run_cli(env, "tenants", "add", "bench").strip().splitlines()[-1]
    run_cli(env, "credentials", "set", "bench", "foundry", "--kind", "azure_openai", "--endpoint", emulator_url,
            "--api-key-stdin", stdin="bench-key")
    port = free_port()
    serve = subprocess.Popen([str(SCRIPT), "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    rows = []
    try:
        wait_for(f"http://127.0.0.1:{port}/api/health", serve)
        groups: dict[str, Any] = {"serve": lambda: [serve.pid], "emulator": lambda: [emulator.pid]}
        if cluster is not None:
            postmaster = cluster.postmaster_pid()
            groups["postgres"] = lambda: [postmaster, *children(postmaster)]
        meter = CpuMeter(groups)
        before: list[tuple[int, int]] = []

        async def begin() -> None:
            if cluster is not None and database is not None:
                before[:] = [await statements(cluster.admin_dsn, database)]
            meter.start()

        for flow, inputs in FLOWS.items():
            url = f"http://127.0.0.1:{port}/api/flows/{flow}/runs"
            body = json.dumps({"inputs": inputs}).encode()
            headers = {"x-api-key": key, "content-type": "application/json"}
            await warm_up(url, body, headers, WARM_UP)
            for concurrency in CONCURRENCY:
                upstream = await direct.measure(concurrency)
                loop = await closed_loop(url, body, headers, concurrency, begin)
                cpu = meter.stop()
                row: dict[str, Any] = {"store": store, "flow": flow, "c": concurrency, "loop": loop,
                                       "cpu": {name: seconds * 1000 / loop.runs for name, seconds in cpu.items()},
                                       "upstream": upstream}
                if cluster is not None and database is not None:
                    after = await statements(cluster.admin_dsn, database)
                    row["statements"] = (after[0] - before[0][0]) / loop.runs
                    row["transactions"] = (after[1] - before[0][1]) / loop.runs
                rows.append(row)
    finally:
        serve.terminate()
        serve.wait(timeout=10)
    return rows


class Upstream:
    """The upstream alone: the chat call a run makes, sent straight to the emulator by the same kind of client."""

    def __init__(self, emulator: subprocess.Popen[bytes], emulator_url: str) -> None:
        self.url = f"{emulator_url}/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21"
        self.body = json.dumps({"model": "gpt-4o-mini", "max_completion_tokens": 32,
                                "messages": [{"role": "user", "content": FLOWS["one-step"]["q"]}]}).encode()
        self.headers = {"api-key": "bench-key", "content-type": "application/json"}
        self.meter = CpuMeter({"emulator": lambda: [emulator.pid]})

    async def measure(self, concurrency: int) -> dict[str, Any]:
        async def begin() -> None:
            self.meter.start()

        loop = await closed_loop(self.url, self.body, self.headers, concurrency, begin)
        return {"loop": loop, "cpu": self.meter.stop()["emulator"] * 1000 / loop.runs}


async def measure() -> list[dict[str, Any]]:
    work = Path(tempfile.mkdtemp(prefix="tf-http-load-"))
    flows = work / "flows"
    flows.mkdir()
    (flows / "one-step.yaml").write_text(ONE_STEP_FLOW)
    shutil.copy(REPO_ROOT / "flows" / "support-reply.yaml", flows / "support-reply.yaml")
    emulator_port = free_port()
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    base = {k: v for k, v in os.environ.items() if not k.startswith("TENANTFLOW_") and k != "AzureWebJobsStorage"}
    base.update({"TENANTFLOW_FLOWS_DIR": str(flows), "TENANTFLOW_ALLOWED_HOSTS": "127.0.0.1",
                 "TENANTFLOW_DEFAULT_ENDPOINT": emulator_url})
    emulator = subprocess.Popen([str(SCRIPT), "emulator", "--port", str(emulator_port)], env=base,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows: list[dict[str, Any]] = []
    try:
        wait_for(f"{emulator_url}/health", emulator)
        direct = Upstream(emulator, emulator_url)
        sqlite_env = {**base, "TENANTFLOW_STORE": "sqlite", "TENANTFLOW_SQLITE_PATH": str(work / "bench.db")}
        if "sqlite" in STORES:
            rows += await measure_store("sqlite", sqlite_env, emulator, emulator_url, direct, None, None)
        if "postgres" in STORES:
            async with own_cluster("-c shared_preload_libraries=pg_stat_statements "
                                   "-c pg_stat_statements.track_utility=on") as postgres:
                if postgres is not None:
                    cluster, pg_env, database = postgres
                    rows += await measure_store("postgres", {**base, **pg_env}, emulator, emulator_url, direct,
                                                cluster, database)
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    return rows


def report(rows: list[dict[str, Any]]) -> dict[str, Any]:
    print("\nEnd-to-end HTTP load (closed loop; added = serve - the direct upstream loop run just before it)")
    header = (f"{'store':<8} {'flow':<14} {'c':>3} {'runs/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'+p50 ms':>8} "
              f"{'+p99 ms':>8} {'serve cpu':>10} {'emu cpu':>8} {'pg cpu':>7} {'stmts':>6} {'xacts':>6} {'fail':>5}")
    print(header)
    figures: dict[str, Any] = {}
    for row in rows:
        loop, upstream = row["loop"], row["upstream"]["loop"]
        print(f"{'direct':<8} {'upstream':<14} {row['c']:>3} {upstream.rate:>8.0f} {upstream.percentile(0.5):>8.2f} "
              f"{upstream.percentile(0.99):>8.2f} {'':>8} {'':>8} {'':>10} {row['upstream']['cpu']:>8.2f} {'':>7} "
              f"{'':>6} {'':>6} {upstream.failures:>5}")
        added50 = loop.percentile(0.5) - upstream.percentile(0.5)
        added99 = loop.percentile(0.99) - upstream.percentile(0.99)
        pg = row["cpu"].get("postgres")
        print(f"{row['store']:<8} {row['flow']:<14} {row['c']:>3} {loop.rate:>8.0f} {loop.percentile(0.5):>8.2f} "
              f"{loop.percentile(0.99):>8.2f} {added50:>8.2f} {added99:>8.2f} {row['cpu']['serve']:>10.2f} "
              f"{row['cpu']['emulator']:>8.2f} {'' if pg is None else f'{pg:.2f}':>7} "
              f"{row.get('statements', float('nan')):>6.1f} {row.get('transactions', float('nan')):>6.1f} "
              f"{loop.failures:>5}")
        name = f"http_{row['store']}_{row['flow'].replace('-', '_')}_c{row['c']}"
        figures[f"{name}_runs_per_s"] = round(loop.rate)
        figures[f"{name}_added_p50_ms"] = round(added50, 2)
        figures[f"{name}_serve_cpu_ms_per_run"] = round(row["cpu"]["serve"], 2)
        if pg is not None:
            figures[f"{name}_postgres_cpu_ms_per_run"] = round(pg, 2)
            figures[f"{name}_statements_per_run"] = round(row["statements"], 1)
    print("cpu columns: ms of CPU per run in each process; stmts/xacts: PostgreSQL statements and transactions per "
          "run (pg_stat_statements)\n")
    return figures


def run() -> dict[str, Any]:
    return report(asyncio.run(measure()))


if __name__ == "__main__":
    run()
