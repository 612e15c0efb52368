"""Launch → first answered run: the wall time from starting `tenantflow serve` (a new process, on SQLite, in front of
the emulator) to the first 200 of a 1-step run, polled every 10 ms. This is what a cold start costs a caller: the
process, its imports, the services, the flow and the first model call. Median and best of a few launches; the
emulator and the tenant are set up once, before."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.http_load import ONE_STEP_FLOW, SCRIPT, run_cli, wait_for
from tests.backends.pg_cluster import free_port

LAUNCHES = 5


def first_answer_seconds(env: dict[str, str], key: str) -> float:
    port = free_port()
    url = f"http://127.0.0.1:{port}/api/flows/one-step/runs"
    body = json.dumps({"inputs": {"q": "What is the status of order 7?"}}).encode()
    headers = {"x-api-key": key, "content-type": "application/json"}
    started = time.perf_counter()
    serve = subprocess.Popen([str(SCRIPT), "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - started < 60:
            try:
                if httpx.post(url, content=body, headers=headers, timeout=30).status_code == 200:
                    return time.perf_counter() - started
            except httpx.TransportError:
                pass
            if serve.poll() is not None:
                break
            time.sleep(0.01)
        raise RuntimeError("serve did not answer a run within 60 s")
    finally:
        serve.terminate()
        serve.wait(timeout=10)


def run() -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="tf-launch-"))
    (work / "flows").mkdir()
    (work / "flows" / "one-step.yaml").write_text(ONE_STEP_FLOW)
    emulator_port = free_port()
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTFLOW_") and k != "AzureWebJobsStorage"}
    env.update({"TENANTFLOW_FLOWS_DIR": str(work / "flows"), "TENANTFLOW_ALLOWED_HOSTS": "127.0.0.1",
                "TENANTFLOW_STORE": "sqlite", "TENANTFLOW_SQLITE_PATH": str(work / "launch.db"),
                "TENANTFLOW_DEFAULT_ENDPOINT": emulator_url})
    emulator = subprocess.Popen([str(SCRIPT), "emulator", "--port", str(emulator_port)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(f"{emulator_url}/health", emulator)
        key = run_cli(env, "tenants", "add", "launch").strip().splitlines()[-1]
        times = [first_answer_seconds(env, key) for _ in range(LAUNCHES)]
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nLaunch -> first answered run (s): {[round(t, 2) for t in times]}")
    return {"launch_to_first_run_median_s": round(statistics.median(times), 2),
            "launch_to_first_run_best_s": round(min(times), 2)}


if __name__ == "__main__":
    print(run())
