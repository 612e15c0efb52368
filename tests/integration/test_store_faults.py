"""A store that cannot be used is named in one line by the CLI and answered 503 problem details with Retry-After
over HTTP — at start-up too, recovering without a restart once the store is back. Real faults: a read-only
file system and a full one (mounted in a private mount namespace: `unshare -m`), a corrupt SQLite file, and a
real PostgreSQL cluster that is stopped and started again."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import azure.functions as func
import httpx
import pytest

from shared.functions import runtime
from shared.functions.local_server import registered_functions
from shared.storage.postgres.database import migrate
from tests.backends.pg_cluster import Cluster, free_port, pg_bin

SCRIPT = Path(sys.executable).parent / "tenantflow"
FUNCTIONS = {f.get_function_name(): f.get_user_function() for f in registered_functions()}


def cli(*args: str, env: dict[str, str], wrap: str | None = None) -> subprocess.CompletedProcess[str]:
    """`tenantflow ARGS`; with `wrap`, a shell prefix run first inside a private mount namespace."""
    command = [str(SCRIPT), *args]
    if wrap is not None:
        if shutil.which("unshare") is None:
            pytest.skip("unshare is not installed")
        command = ["unshare", "-m", "sh", "-c", f'{wrap} && exec "$@"', "sh", *command]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def sqlite_env(tmp_path):
    folder = tmp_path / "store"
    folder.mkdir()
    env = {**os.environ, "TENANTFLOW_SQLITE_PATH": str(folder / "tenantflow.db"), "TENANTFLOW_STORE": "sqlite"}
    assert cli("tenants", "add", "contoso", env=env).returncode == 0
    return folder, env


def assert_one_line(result: subprocess.CompletedProcess[str], cause: str, path: Path) -> None:
    assert result.returncode == 1, result
    assert result.stderr == f"error: store unavailable: SQLite database {path}: {cause}\n"
    assert "Traceback" not in result.stderr + result.stdout


def test_cli_names_a_read_only_database(sqlite_env):
    folder, env = sqlite_env
    result = cli("tenants", "add", "fabrikam", env=env, wrap=f"mount --bind -o ro {folder} {folder}")
    if "mount:" in result.stderr:
        pytest.skip(f"cannot mount here: {result.stderr.strip()}")
    assert_one_line(result, "the database is read-only (check the file's and its folder's permissions)",
                    folder / "tenantflow.db")


def test_cli_names_a_full_disk(sqlite_env, tmp_path):
    folder, env = sqlite_env
    full = tmp_path / "full"
    full.mkdir()
    # a 512 KiB file system holding the database, filled until only the 32 KiB WAL index fits
    wrap = (f"mount -t tmpfs -o size=512k tmpfs {full} && cp {folder}/* {full}/ && "
            f"free=$(df -B1 --output=avail {full} | tail -1) && "
            f"(head -c $((free - 33 * 1024)) /dev/zero > {full}/filler || true)")
    result = cli("tenants", "add", "fabrikam", env={**env, "TENANTFLOW_SQLITE_PATH": str(full / "tenantflow.db")},
                 wrap=wrap)
    if "mount:" in result.stderr:
        pytest.skip(f"cannot mount here: {result.stderr.strip()}")
    assert_one_line(result, "the disk is full (or the database reached its size limit)", full / "tenantflow.db")


def test_cli_names_a_corrupt_file(sqlite_env):
    folder, env = sqlite_env
    path = folder / "tenantflow.db"
    with path.open("r+b") as file:
        file.write(b"this is not an SQLite database header" * 4)
    assert_one_line(cli("tenants", "list", env=env), "the file is corrupt or not a SQLite database", path)


async def call(name: str, method: str = "GET", path: str = "health", body: bytes = b"",
               headers: dict[str, str] | None = None, route: dict[str, str] | None = None) -> func.HttpResponse:
    request = func.HttpRequest(method=method, url=f"http://localhost/api/{path}", headers=headers or {},
                               params={}, route_params=route or {}, body=body)
    return await FUNCTIONS[name](request)


def assert_store_problem(response: func.HttpResponse, cause: str) -> None:
    problem = json.loads(response.get_body())
    assert response.status_code == 503 == problem["status"], problem
    assert response.headers["content-type"] == "application/problem+json" and response.headers["retry-after"] == "5"
    assert problem["title"] == "Store unavailable" and cause in problem["detail"]


async def test_http_answers_503_while_the_file_is_corrupt_and_recovers_without_a_restart(tmp_path, monkeypatch):
    path = tmp_path / "tenantflow.db"
    path.write_bytes(b"garbage, not a database" * 100)
    monkeypatch.setenv("TENANTFLOW_STORE", "sqlite")
    monkeypatch.setenv("TENANTFLOW_SQLITE_PATH", str(path))
    monkeypatch.delenv("TENANTFLOW_QUEUE_CONNECTION", raising=False)
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    runtime.use(None)
    try:
        assert_store_problem(await call("health"), f"SQLite database {path}: the file is corrupt")
        run = await call("start_run", "POST", "flows/support-reply/runs", b'{"inputs": {"ticket": "x"}}',
                         {"x-api-key": "tf_000000000000_" + "x" * 40}, {"flow": "support-reply"})
        assert_store_problem(run, "the file is corrupt")
        path.unlink()  # the operator restores the file: the next request builds the services
        healthy = await call("health")
        assert healthy.status_code == 200 and json.loads(healthy.get_body())["components"]["store"]["status"] == "ok"
    finally:
        if runtime.services_instance is not None:
            await runtime.services_instance.close()
        runtime.use(None)


async def test_http_answers_503_when_the_database_turns_read_only_or_full(tmp_path, monkeypatch):
    from shared.bootstrap import build_services
    from shared.settings import Settings

    monkeypatch.setenv("TENANTFLOW_SQLITE_PATH", str(tmp_path / "tenantflow.db"))
    monkeypatch.setenv("TENANTFLOW_STORE", "sqlite")
    svc = await build_services(Settings.from_env())
    runtime.use(svc)
    try:
        key = (await svc.tenants.add("contoso")).api_key.reveal()
        db = svc.stores.health.db  # the app's own SQLite connection
        body = json.dumps({"inputs": {"ticket": "x" * 200_000}}).encode()  # needs pages the file does not have

        async def start() -> func.HttpResponse:
            return await call("start_run", "POST", "flows/support-reply/runs", body, {"x-api-key": key},
                              {"flow": "support-reply"})

        await db.run(lambda c: c.execute("PRAGMA query_only = 1"))  # the connection can no longer write
        assert_store_problem(await start(), "the database is read-only")
        await db.run(lambda c: c.execute("PRAGMA query_only = 0"))
        pages = await db.run(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
        await db.run(lambda c: c.execute(f"PRAGMA max_page_count = {pages}"))  # the disk is full
        assert_store_problem(await start(), "the disk is full")
        assert (await svc.stores.runs.list("contoso")) == []
    finally:
        await svc.close()
        runtime.use(None)


def test_serve_with_postgres_down_at_start_up_answers_503_and_recovers(tmp_path, emulator):
    if os.geteuid() != 0 or pg_bin() is None:
        pytest.skip("starting a PostgreSQL cluster needs root (runuser) and the server binaries")
    cluster = Cluster()
    dsn = f"postgresql://postgres@127.0.0.1:{cluster.port}/postgres"
    env = {**os.environ, "TENANTFLOW_STORE": "postgres", "TENANTFLOW_POSTGRES_DSN": dsn,
           "TENANTFLOW_ENCRYPTION_KEY": "test:" + "A" * 43 + "=", "TENANTFLOW_ALLOWED_HOSTS": "127.0.0.1",
           "TENANTFLOW_DEFAULT_ENDPOINT": emulator.base_url}
    for name in ("TENANTFLOW_QUEUE_CONNECTION", "AzureWebJobsStorage", "TENANTFLOW_POSTGRES_MIGRATION_DSN"):
        env.pop(name, None)
    port = free_port()
    server = subprocess.Popen([str(SCRIPT), "serve", "--port", str(port)], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(f"{base}/health", timeout=30)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and server.poll() is None
                time.sleep(0.2)
        for response in (health, httpx.post(f"{base}/flows/support-reply/runs", json={"inputs": {}}, timeout=60,
                                            headers={"x-api-key": "tf_000000000000_" + "x" * 40})):
            assert response.status_code == 503, response.text
            assert response.headers["content-type"] == "application/problem+json" and response.headers["retry-after"]
            assert response.json()["detail"] == (f"PostgreSQL at 127.0.0.1:{cluster.port} is unavailable: "
                                                 "connection refused; retry later")
        cluster.start()
        try:
            asyncio.run(migrate(dsn, dsn))  # the deploy step (`tenantflow db migrate`): the app never migrates
            recovered = httpx.get(f"{base}/health", timeout=60)
            assert recovered.status_code == 200, recovered.text
            assert recovered.json()["components"]["store"] == {"status": "ok", "backend": "postgres"}
        finally:
            cluster.stop()
    finally:
        server.terminate()
        _, err = server.communicate(timeout=10)
        cluster.remove()
    assert b"Traceback" not in err
