"""The Functions Python worker of each supported version indexes function_app.py offline, in a clean venv holding
requirements.txt (Python 3.12, the version infra/ deploys, and 3.13): every route, binding, queue name and schedule
is what the contract says."""

from __future__ import annotations

import json
import os
import re
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from shared.functions.routes import ADMIN, reserved_by_host
from shared.services.queue_worker import MAX_DEQUEUE_COUNT, RUN_TIMEOUT

ROOT = Path(__file__).resolve().parent.parent.parent
WORKER_VENVS = {"3.12": ROOT / ".venv312", "3.13": ROOT / ".venv313"}


def worker_python(version: str) -> Path:
    python = WORKER_VENVS[version] / "bin" / "python"
    if not python.exists():
        message = f"{WORKER_VENVS[version].name} is missing: `make setup` builds it (Python {version}, requirements)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return python


@pytest.fixture(scope="module", params=sorted(WORKER_VENVS))
def indexed(request) -> dict[str, list[dict]]:
    result = subprocess.run([str(worker_python(request.param)), str(Path(__file__).parent / "index_with_worker.py"),
                             str(ROOT)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["python"].startswith(request.param + ".")
    assert report["worker"].startswith("azure-functions-runtime" if request.param == "3.13" else "azure-functions ")
    return {f["name"]: f["bindings"] for f in report["functions"]}


@pytest.mark.parametrize("version", sorted(WORKER_VENVS))
def test_each_worker_venv_holds_every_requirement(version):
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    names = [re.split(r"[<>=\[ ;#]", line.strip(), maxsplit=1)[0] for line in lines
             if line.strip() and not line.lstrip().startswith("#")]
    script = ("import importlib.metadata as m, json, sys\n"
              "print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))")
    result = subprocess.run([str(worker_python(version)), "-c", script, *names], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr  # PackageNotFoundError names the missing one
    assert set(json.loads(result.stdout)) == set(names) and len(names) >= 10


def test_the_worker_finds_every_function_with_its_bindings(indexed):
    functions = indexed
    http = {name: next(b for b in bindings if b["type"] == "httpTrigger") for name, bindings in functions.items()
            if any(b["type"] == "httpTrigger" for b in bindings)}
    routes = {(b["route"], tuple(b["methods"])) for b in http.values()}
    assert routes >= {
        ("flows/{flow}/runs", ("POST",)),
        ("runs/{run_id}", ("GET",)),
        ("hooks/{tenant}/{flow}", ("POST",)),
        ("health", ("GET",)),
        ("usage", ("GET",)),
        (ADMIN + "/usage", ("GET",)),
        ("dashboard", ("GET",)),
        ("v1/chat/completions", ("POST",)),
        ("v1/models", ("GET",)),
        ("openai/deployments/{alias}/chat/completions", ("POST",)),
        (ADMIN + "/tenants/{tenant}/models/{alias}", ("PUT", "GET", "DELETE")),
        (ADMIN + "/tenants/{tenant}/models", ("GET",)),
        (ADMIN + "/tenants", ("POST",)),
        (ADMIN + "/tenants/{tenant}/keys", ("POST",)),
        (ADMIN + "/tenants/{tenant}/credentials/{name}", ("PUT",)),
        (ADMIN + "/tenants/{tenant}/budget", ("GET",)),
        (ADMIN + "/schedules/{schedule_id}", ("DELETE",)),
    }
    assert not any(reserved_by_host(route) for route, _ in routes)  # the host would put those in error
    assert all(b["authLevel"] == "ANONYMOUS" for b in http.values())  # identity comes from API keys / signatures
    (queue,) = [b for bindings in functions.values() for b in bindings if b["type"] == "queueTrigger"]
    # the app setting the sender uses too (default flow-runs): sender and listener cannot diverge
    assert (queue["queueName"], queue["connection"]) == ("%TENANTFLOW_RUN_QUEUE%", "AzureWebJobsStorage")
    (timer,) = [b for bindings in functions.values() for b in bindings if b["type"] == "timerTrigger"]
    assert timer["schedule"] == "0 * * * * *" and timer["name"] == "timer"
    operator_api = {"admin_add_tenant", "admin_list_tenants", "admin_suspend_tenant", "admin_activate_tenant",
                    "admin_create_key", "admin_list_keys", "admin_revoke_key", "admin_list_credentials",
                    "admin_put_credential", "admin_get_credential", "admin_delete_credential", "admin_put_budget",
                    "admin_get_budget", "admin_add_schedule", "admin_list_schedules", "admin_remove_schedule",
                    "admin_remove_schedule_by_query"}
    assert set(functions) == {"start_run", "get_run", "webhook", "health", "usage", "admin_usage", "dashboard",
                              "flow_runs", "schedules", "chat_completions", "azure_chat_completions", "list_models",
                              "admin_model_alias", "admin_model_aliases", *operator_api}


def test_host_json_routes_under_api_and_poisons_after_five_attempts():
    host = json.loads((ROOT / "host.json").read_text())
    assert host["extensions"]["http"]["routePrefix"] == "api"
    assert host["extensions"]["queues"]["maxDequeueCount"] == 5
    assert host["extensions"]["queues"]["messageEncoding"] == "base64"
    assert host["extensionBundle"]["id"] == "Microsoft.Azure.Functions.ExtensionBundle"
    # the queue worker declares a `running` run dead once no invocation can still be alive
    hours, minutes, seconds = (int(part) for part in host["functionTimeout"].split(":"))
    assert timedelta(hours=hours, minutes=minutes, seconds=seconds) < RUN_TIMEOUT
    assert host["extensions"]["queues"]["maxDequeueCount"] == MAX_DEQUEUE_COUNT
