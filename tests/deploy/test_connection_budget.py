"""Scale-out cannot exhaust PostgreSQL: the numbers in infra/, host.json and the settings add up."""

from __future__ import annotations

import json
import re
from pathlib import Path

from shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent.parent
BICEP = (ROOT / "infra" / "main.bicep").read_text()


def int_param(name: str) -> int:
    (value,) = re.findall(rf"^param {name} int = (\d+)$", BICEP, re.MULTILINE)
    return int(value)


def app_setting(name: str) -> str:
    (value,) = re.findall(rf"\{{ name: '{name}', value: ([^}}]+?) \}}", BICEP)
    return value


def test_every_instance_pool_fits_the_server():
    pool, instances = int_param("postgresPoolSize"), int_param("maximumInstanceCount")
    budget = pool * instances + int_param("postgresReservedConnections") + int_param("connectionHeadroom")
    assert budget <= int_param("postgresMaxConnections"), f"{pool} × {instances} + reserved + headroom = {budget}"
    assert int_param("postgresMaxConnections") <= 50 or "Standard_B1ms" not in BICEP  # a B1ms allows at most 50
    assert int_param("connectionHeadroom") >= 2  # `tenantflow db migrate` and an operator's psql


def test_the_numbers_reach_the_server_the_app_and_the_scale_limit():
    assert "maximumInstanceCount: maximumInstanceCount" in BICEP
    assert app_setting("TENANTFLOW_POSTGRES_POOL_SIZE") == "string(postgresPoolSize)"
    assert re.search(r"name: 'max_connections'\n\s+properties: \{ value: string\(postgresMaxConnections\)", BICEP)
    assert app_setting("TENANTFLOW_POSTGRES_ENTRA") == "'true'"


def test_the_settings_default_pool_is_the_deployed_one():
    example = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    deployed = int_param("postgresPoolSize")
    assert Settings().postgres_pool_size == deployed == int(example["TENANTFLOW_POSTGRES_POOL_SIZE"])
    assert Settings.from_env({"TENANTFLOW_POSTGRES_POOL_SIZE": "3"}).postgres_pool_size == 3


def test_queue_concurrency_per_instance_fits_the_pool():
    queues = json.loads((ROOT / "host.json").read_text())["extensions"]["queues"]
    # the queue trigger runs up to batchSize + newBatchThreshold messages at once on one instance
    assert queues["batchSize"] + queues["newBatchThreshold"] <= int_param("postgresPoolSize")
    assert queues["batchSize"] >= 1 and queues["newBatchThreshold"] >= 0
