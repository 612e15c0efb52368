"""README's "Try it locally" block, run as written — pasted twice into one shell — in a private network namespace
(`unshare -rn`: its own 127.0.0.1, so the fixed ports 8765/7071 never meet another checkout's servers), with the
repository's .venv and a throwaway SQLite store."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def try_it_block() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"Try it locally.*?\n```\n(.*?)```\n", readme, re.S)
    assert match, "README has no 'Try it locally' block"
    return match.group(1)


def private_network_available() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    return subprocess.run(["unshare", "-rn", "true"], capture_output=True, timeout=10).returncode == 0


def test_try_it_locally_works_pasted_twice(tmp_path):
    if not private_network_available():
        pytest.skip("unshare -rn (a private network namespace) is not available")
    block = try_it_block()
    assert "curl -sS --fail" in block and "wait_for" in block
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    marker = "=== second paste ==="
    script = f"{block}\necho '{marker}'\n{block}\nkill $(jobs -p) 2>/dev/null; wait\n"
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "TENANTFLOW_SQLITE_PATH": str(tmp_path / "t.db")}
    process = subprocess.Popen(["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec bash -c "$0"', script],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        out, err = process.communicate(timeout=180)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    first, _, second = out.partition(marker + "\n")
    assert second, f"the second paste did not run:\n{out}\n{err}"
    for paste in (first, second):
        answers = [json.loads(line) for line in paste.splitlines() if line.startswith("{")]
        runs = [a for a in answers if "run_id" in a]
        assert [(r["flow"], r["status"]) for r in runs] == [("support-reply", "succeeded"),
                                                            ("ticket-webhook", "succeeded")], paste + err
        usage = next(a for a in answers if "totals" in a)
        assert usage["group_by"] == "model" and usage["totals"]["runs"] >= 1
    assert "curl:" not in err and "no answer from" not in err and "Traceback" not in err, err
