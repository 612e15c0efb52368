"""Every setting the code reads is documented for local use and set in the Azure deployment."""

import json
import re
from pathlib import Path

from shared.settings import CLIENT_SETTING_NAMES, DEPLOY_SETTING_NAMES, SETTING_NAMES

ROOT = Path(__file__).resolve().parent.parent.parent


def test_every_setting_is_in_bicep_and_the_local_example():
    bicep = (ROOT / "infra" / "main.bicep").read_text()
    example = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    set_in_bicep = set(re.findall(r"name: '(TENANTFLOW_[A-Z_]+)'", bicep))
    assert set(SETTING_NAMES) - set(DEPLOY_SETTING_NAMES) - set_in_bicep == set()
    assert set(SETTING_NAMES) - set(example) == set()
    assert "FUNCTIONS_WORKER_RUNTIME" in example and "AzureWebJobsStorage" in example


def test_deploy_and_client_settings_are_no_app_settings_and_are_documented():
    """The owner's migration DSN reaches `tenantflow db migrate` from the postprovision hook only; the app never holds
    it. The CLI's TENANTFLOW_URL is the azd output the operator uses, not a setting of the app."""
    bicep = (ROOT / "infra" / "main.bicep").read_text()
    hooks = (ROOT / "shared" / "deploy" / "hooks.py").read_text()
    readme = (ROOT / "README.md").read_text()
    for name in DEPLOY_SETTING_NAMES + CLIENT_SETTING_NAMES:
        assert f"name: '{name}'" not in bicep, name
        assert f"`{name}`" in readme, name
    assert set(DEPLOY_SETTING_NAMES) <= set(SETTING_NAMES)
    assert all(f'"{name}"' in hooks for name in DEPLOY_SETTING_NAMES)
    assert "output TENANTFLOW_URL string" in bicep


def test_code_reads_no_undeclared_setting():
    read = set()
    for path in (ROOT / "shared").rglob("*.py"):
        read |= set(re.findall(r"\"(TENANTFLOW_[A-Z_]+)\"", path.read_text()))
    read -= {name for name in read if name.startswith("TENANTFLOW_TEST_")}
    read.discard("TENANTFLOW_DEBUG")  # a CLI flag for developers (show tracebacks), not an app setting
    assert read <= set(SETTING_NAMES + CLIENT_SETTING_NAMES), read - set(SETTING_NAMES)
