"""`tenantflow schedules add|list|remove` (contract) in a subprocess on the embedded SQLite store, and the
schedule service's cron checks and due-minute matching."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from datetime import UTC, datetime

from shared.services.schedules import is_due, scheduled_run_id


def tenantflow(tmp_path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TENANTFLOW_STORE": "sqlite", "TENANTFLOW_SQLITE_PATH": str(tmp_path / "cli.db"),
           "TENANTFLOW_ENCRYPTION_KEY": "k1:" + base64.b64encode(b"k" * 32).decode()}
    env.pop("TENANTFLOW_FLOWS_DIR", None)
    result = subprocess.run([sys.executable, "-m", "shared.cli", *args], env=env, capture_output=True, text=True,
                            timeout=60)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def test_schedules_add_list_remove(tmp_path):
    assert tenantflow(tmp_path, "tenants", "add", "contoso").returncode == 0
    bad = tenantflow(tmp_path, "schedules", "add", "contoso", "support-reply", "--cron", "61 * * * *",
                     "--input", "ticket=x")
    assert bad.returncode != 0 and "--cron '61 * * * *': minute: 61 is outside 0–59" in bad.stderr
    six = tenantflow(tmp_path, "schedules", "add", "contoso", "support-reply", "--cron", "0 * * * * *",
                     "--input", "ticket=x")
    assert six.returncode != 0 and "expected 5 fields" in six.stderr
    hourly = tenantflow(tmp_path, "schedules", "add", "contoso", "support-reply", "--cron", "@hourly",
                        "--input", "ticket=x")
    assert hourly.returncode == 0 and "cron '@hourly'" in hourly.stdout, hourly.stderr
    missing = tenantflow(tmp_path, "schedules", "add", "contoso", "support-reply", "--cron", "*/5 * * * *")
    assert missing.returncode != 0 and "ticket" in missing.stderr  # inputs that could never run are refused
    unknown = tenantflow(tmp_path, "schedules", "add", "nobody", "support-reply", "--cron", "*/5 * * * *",
                         "--input", "ticket=x")
    assert unknown.returncode != 0 and "nobody" in unknown.stderr
    added = tenantflow(tmp_path, "schedules", "add", "contoso", "support-reply", "--cron", "*/5 * * * *",
                       "--input", "ticket=nightly check")
    assert added.returncode == 0, added.stderr
    schedule_id = added.stdout.split()[1]
    listed = tenantflow(tmp_path, "schedules", "list", "contoso")
    assert schedule_id in listed.stdout and "*/5 * * * *" in listed.stdout and "nightly check" in listed.stdout
    assert tenantflow(tmp_path, "schedules", "list", "other").stdout.strip() == ""
    assert tenantflow(tmp_path, "schedules", "remove", schedule_id).returncode == 0
    assert schedule_id not in tenantflow(tmp_path, "schedules", "list").stdout
    again = tenantflow(tmp_path, "schedules", "remove", schedule_id)
    assert again.returncode != 0 and f"no schedule {schedule_id}" in again.stderr


def test_due_minutes_and_deterministic_run_ids():
    at = datetime(2026, 3, 2, 9, 15, 42, tzinfo=UTC)
    assert is_due("*/5 * * * *", at) and is_due("15 9 * * 1", at)  # 2026-03-02 is a Monday
    assert not is_due("*/7 * * * *", at) and not is_due("15 9 * * 2", at)
    same_minute = scheduled_run_id("s1", at.replace(second=0)), scheduled_run_id("s1", at.replace(second=59))
    assert same_minute[0] == same_minute[1]
    assert scheduled_run_id("s1", at) != scheduled_run_id("s2", at)
    assert scheduled_run_id("s1", at) != scheduled_run_id("s1", at.replace(minute=16))
