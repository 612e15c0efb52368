"""`make services-up` writes local.settings.json for the services it started, so `func start` runs against them."""

from __future__ import annotations

import json
from pathlib import Path

from psycopg import AsyncConnection

from shared.deploy.local_settings import azurite_connection, local_settings
from shared.settings import Settings
from shared.storage.factory import open_stores
from tests.backends.fixtures import require_service

ROOT = Path(__file__).resolve().parent.parent.parent
EXAMPLE = json.loads((ROOT / "local.settings.example.json").read_text())


def test_the_services_ports_win_and_the_developers_own_values_and_keys_stay():
    existing = {"Host": {"LocalHttpPort": 7072},
                "Values": {"MY_SETTING": "mine", "TENANTFLOW_ENCRYPTION_KEY": "kept-key",
                           "TENANTFLOW_OPERATOR_KEY": "op", "AzureWebJobsStorage": "UseDevelopmentStorage=true",
                           "TENANTFLOW_FLOWS_DIR": "my-flows"}}
    written = local_settings(existing, EXAMPLE, postgres_port=5999, azurite_port=20100)
    values = written["Values"]
    assert written["Host"] == {"LocalHttpPort": 7072} and written["IsEncrypted"] is False
    assert (values["MY_SETTING"], values["TENANTFLOW_ENCRYPTION_KEY"], values["TENANTFLOW_OPERATOR_KEY"],
            values["TENANTFLOW_FLOWS_DIR"]) == ("mine", "kept-key", "op", "my-flows")
    assert values["FUNCTIONS_WORKER_RUNTIME"] == "python" and values["TENANTFLOW_STORE"] == "postgres"
    assert values["AzureWebJobsStorage"] == values["TENANTFLOW_QUEUE_CONNECTION"] == azurite_connection(20100)
    assert "QueueEndpoint=http://127.0.0.1:20101/devstoreaccount1" in values["AzureWebJobsStorage"]
    assert "TableEndpoint=http://127.0.0.1:20102/devstoreaccount1" in values["TENANTFLOW_TABLE_CONNECTION"]
    assert values["TENANTFLOW_POSTGRES_DSN"] == "postgresql://tenantflow_app@127.0.0.1:5999/tenantflow"
    assert set(EXAMPLE["Values"]) <= set(values)


def test_keys_are_made_once():
    first = local_settings({}, EXAMPLE, 5999, 20100)["Values"]
    assert len(first["TENANTFLOW_ENCRYPTION_KEY"]) == 44 and len(first["TENANTFLOW_OPERATOR_KEY"]) == 48
    again = local_settings({"Values": first}, EXAMPLE, 6000, 20200)["Values"]
    assert again["TENANTFLOW_ENCRYPTION_KEY"] == first["TENANTFLOW_ENCRYPTION_KEY"]
    assert again["TENANTFLOW_OPERATOR_KEY"] == first["TENANTFLOW_OPERATOR_KEY"]
    assert again["TENANTFLOW_POSTGRES_DSN"].endswith(":6000/tenantflow")


async def test_the_written_file_reaches_the_running_services():
    """The file services.sh wrote: the app's settings load from it, migrate as the owner and work as the app role,
    and its storage connection reaches the running Azurite."""
    storage = require_service("TENANTFLOW_TEST_TABLE_CONNECTION")
    values = json.loads((ROOT / "local.settings.json").read_text())["Values"]
    assert values["AzureWebJobsStorage"] == storage  # the Azurite this checkout's services.sh started
    settings = Settings.from_env(values)
    stores = await open_stores(settings)
    try:
        assert isinstance(await stores.tenants.list(), list)
    finally:
        await stores.close()
    async with await AsyncConnection.connect(values["TENANTFLOW_POSTGRES_DSN"]) as connection:
        row = await (await connection.execute(
            "SELECT current_user, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")).fetchone()
    assert row == ("tenantflow_app", False, False)
    from azure.storage.queue import QueueClient

    queue = QueueClient.from_connection_string(values["AzureWebJobsStorage"], "local-settings-probe")
    try:
        queue.create_queue()
        queue.send_message("ping")
        assert [m.content for m in queue.receive_messages()] == ["ping"]
    finally:
        queue.delete_queue()
        queue.close()
