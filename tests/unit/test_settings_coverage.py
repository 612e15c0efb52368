"""Every setting the code reads is documented for local use and set in the Azure deployment."""

import json
import re
from pathlib import Path

from shared.settings import SETTING_NAMES

ROOT = Path(__file__).resolve().parent.parent.parent


def test_every_setting_is_in_bicep_and_the_local_example():
    bicep = (ROOT / "infra" / "main.bicep").read_text()
    example = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    set_in_bicep = set(re.findall(r"name: '(TENANTFLOW_[A-Z_]+)'", bicep))
    assert set(SETTING_NAMES) - set_in_bicep == set()
    assert set(SETTING_NAMES) - set(example) == set()
    assert "FUNCTIONS_WORKER_RUNTIME" in example and "AzureWebJobsStorage" in example


def test_code_reads_no_undeclared_setting():
    read = set()
    for path in (ROOT / "shared").rglob("*.py"):
        read |= set(re.findall(r"\"(TENANTFLOW_[A-Z_]+)\"", path.read_text()))
    read -= {name for name in read if name.startswith("TENANTFLOW_TEST_")}
    read.discard("TENANTFLOW_DEBUG")  # a CLI flag for developers (show tracebacks), not an app setting
    assert read <= set(SETTING_NAMES), read - set(SETTING_NAMES)
