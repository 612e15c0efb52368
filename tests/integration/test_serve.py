"""`tenantflow serve`, the installed console script, started from another directory: the app's own HTTP
functions answer over real HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.backends.pg_cluster import free_port


def test_serve_answers_with_the_registered_functions(tmp_path, emulator):
    script = Path(sys.executable).parent / "tenantflow"
    env = {**os.environ, "TENANTFLOW_SQLITE_PATH": str(tmp_path / "serve.db"), "TENANTFLOW_ALLOWED_HOSTS": "127.0.0.1",
           "TENANTFLOW_DEFAULT_ENDPOINT": emulator.base_url}
    for name in ("TENANTFLOW_QUEUE_CONNECTION", "AzureWebJobsStorage", "TENANTFLOW_STORE"):
        env.pop(name, None)
    added = subprocess.run([str(script), "tenants", "add", "contoso"], env=env, cwd=tmp_path, capture_output=True,
                           text=True, timeout=60)
    key = added.stdout.strip().splitlines()[-1]
    port = free_port()
    server = subprocess.Popen([str(script), "serve", "--port", str(port)], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(f"{base}/health", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and server.poll() is None, server.stderr.read().decode()
                time.sleep(0.2)
        assert health.status_code == 200  # no queue configured: reported, not a failure
        assert health.json()["components"] == {"store": {"status": "ok", "backend": "sqlite"},
                                               "queue": {"status": "not_configured"}}
        ran = httpx.post(f"{base}/flows/grounded-answer/runs", headers={"x-api-key": key}, timeout=30,
                         json={"inputs": {"question": "Why?", "passages": ["Because."]}})
        assert ran.status_code == 200 and ran.json()["status"] == "succeeded"
        answer = ran.json()["outputs"]["answer"]["answer"]
        assert answer.startswith("[gpt-4o-mini] Re: Context: Because. Question: Why?")
        queued = httpx.post(f"{base}/flows/grounded-answer/runs?wait=false", headers={"x-api-key": key}, timeout=30,
                            json={"inputs": {"question": "Why?", "passages": []}})
        assert queued.status_code == 503 and "no queue is configured" in queued.json()["detail"]
        assert httpx.get(f"{base}/dashboard", headers={"x-api-key": key}).status_code == 200
        # the gateway's routes, relayed as they stream (the OpenAI SDK, with an alias set by the CLI)
        import openai

        subprocess.run([str(script), "credentials", "set", "contoso", "foundry", "--kind", "azure_openai",
                        "--endpoint", emulator.base_url, "--api-key-stdin"], input=b"sk-upstream", env=env,
                       cwd=tmp_path, check=True, capture_output=True, timeout=60)
        subprocess.run([str(script), "models", "set", "contoso", "chat", "--credential", "foundry", "--deployment",
                        "gpt-4o-mini"], env=env, cwd=tmp_path, check=True, capture_output=True, timeout=60)
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
        chunks = list(client.chat.completions.create(model="chat", stream=True, stream_options={"include_usage": True},
                                                     messages=[{"role": "user", "content": "Hello there"}]))
        assert chunks[-1].usage is not None and chunks[0].model == "gpt-4o-mini-2024-07-18"
        assert [m.id for m in client.models.list()] == ["chat"]
    finally:
        server.terminate()
        server.wait(timeout=10)
