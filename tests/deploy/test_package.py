"""`make package` builds the zip `azd deploy` ships: the app, and nothing local, secret or dev-only."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from shared.deploy.package import PACKAGE_NAME, build_package, is_ignored, package_files, parse_ignore

ROOT = Path(__file__).resolve().parent.parent.parent
MUST_HOLD = ("function_app.py", "host.json", "requirements.txt")
MUST_HOLD_DIRS = ("shared/", "flows/")
NEVER = ("tests/", "node_modules/", ".tenantflow/", "local.settings.json", ".services/", "screenshots/")
DECOYS = (".venv/lib/site.py", ".venv313/bin/python", ".venv-deploy/x.py", "scripts/azurite/node_modules/a/index.js",
          "node_modules/b/index.js", "shared/web/node_modules/c.js", "tests/test_x.py", ".tenantflow/encryption.key",
          ".tenantflow/tenantflow.db", "data.db", "shared/nested/secret.key", "local.settings.json",
          ".services/env", "screenshots/dashboard.png", "shared/__pycache__/x.cpython-312.pyc")


def names_in(archive_path: Path) -> list[str]:
    with zipfile.ZipFile(archive_path) as archive:
        return archive.namelist()


def assert_deployable(names: list[str]) -> None:
    for required in MUST_HOLD:
        assert required in names
    for folder in MUST_HOLD_DIRS:
        assert any(name.startswith(folder) for name in names), folder
    assert "shared/__init__.py" in names and "flows/support-reply.yaml" in names
    for name in names:
        parts = name.split("/")
        assert not any(part.startswith(".venv") for part in parts), name
        assert not any(name.startswith(banned) or f"/{banned}" in f"/{name}" for banned in NEVER), name
        assert not name.endswith((".db", ".key", ".pyc")), name


def test_the_package_holds_the_app_and_nothing_local(tmp_path):
    target = build_package(tmp_path / "dist", ROOT)
    assert target.name == PACKAGE_NAME and [p.name for p in (tmp_path / "dist").iterdir()] == [PACKAGE_NAME]
    names = names_in(target)
    assert_deployable(names)
    assert sorted(names) == package_files(ROOT)
    assert target.stat().st_size <= 5 * 1024 * 1024


def test_funcignore_leaves_out_secrets_and_dev_trees_wherever_they_are(tmp_path):
    """A copy of the app with every kind of local file planted in it: the zip still holds only the app."""
    for name in (*MUST_HOLD, ".funcignore"):
        shutil.copy(ROOT / name, tmp_path / name)
    for folder in ("shared", "flows"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for decoy in DECOYS:
        (tmp_path / decoy).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / decoy).write_text("planted")
    names = names_in(build_package(tmp_path / "dist", tmp_path))
    assert_deployable(names)
    assert not set(DECOYS) & set(names)


def test_rebuilding_replaces_the_zip_and_gives_the_same_bytes(tmp_path):
    out = tmp_path / "dist"
    first = build_package(out, ROOT).read_bytes()
    (out / "stale.zip").write_bytes(b"old")
    second = build_package(out, ROOT)
    assert second.read_bytes() == first and [p.name for p in out.iterdir()] == [PACKAGE_NAME]


@pytest.mark.parametrize("pattern, path, is_dir, ignored", [
    ("*.key", "a/b/c.key", False, True),
    ("tests/", "tests", True, True),
    ("tests/", "tests", False, False),          # a file named tests is not the directory
    ("/build", "shared/build", True, False),    # anchored at the root
    ("shared/**/x.txt", "shared/a/b/x.txt", False, True),
    (".venv*/", ".venv313", True, True),
    ("*.py[cod]", "x.pyc", False, True),
])
def test_gitignore_rules(pattern, path, is_dir, ignored):
    assert is_ignored(path, is_dir, parse_ignore(pattern)) is ignored


def test_a_negated_rule_re_includes():
    rules = parse_ignore("*.json\n!host.json\n")
    assert is_ignored("x.json", False, rules) and not is_ignored("host.json", False, rules)


def test_make_package_writes_one_zip_under_dist():
    result = subprocess.run([sys.executable, "-m", "shared.deploy.package"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    zips = list((ROOT / "dist").glob("*.zip"))
    assert [z.name for z in zips] == [PACKAGE_NAME] and "KiB" in result.stdout
    assert_deployable(names_in(zips[0]))
