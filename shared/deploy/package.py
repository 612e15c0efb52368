"""Builds the deployable zip of the function app: the repository's files minus what `.funcignore` names.

`make package` (`python -m shared.deploy.package`) and the packaging test use this one code path. `.funcignore`
is read with gitignore rules, as Core Tools and azd read it: `#` comments, `!` re-includes, a trailing `/` matches
directories only, a pattern holding a `/` is anchored at the root, otherwise it matches a name at any depth;
`*` and `?` stay inside one path segment and `**` crosses segments. An ignored directory is not descended into.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
PACKAGE_NAME = "tenantflow-app.zip"
ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)  # fixed, so the same tree gives the same bytes


@dataclass(frozen=True)
class IgnoreRule:
    pattern: re.Pattern[str]
    negated: bool
    directories_only: bool


def glob_to_regex(glob: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(glob):
        char = glob[i]
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if glob.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = glob.find("]", i + 1)
            if end == -1:
                out.append(re.escape(char))
            else:
                out.append("[" + glob[i + 1:end].replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def parse_ignore(text: str) -> list[IgnoreRule]:
    rules: list[IgnoreRule] = []
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        if negated:
            line = line[1:]
        directories_only = line.endswith("/")
        line = line.rstrip("/")
        anchored = "/" in line
        line = line.lstrip("/")
        prefix = "" if anchored else "(?:.*/)?"
        rules.append(IgnoreRule(re.compile(prefix + glob_to_regex(line) + r"\Z"), negated, directories_only))
    return rules


def is_ignored(relative: str, is_directory: bool, rules: list[IgnoreRule]) -> bool:
    """`relative` uses `/`; the last matching rule decides."""
    ignored = False
    for rule in rules:
        if rule.directories_only and not is_directory:
            continue
        if rule.pattern.match(relative):
            ignored = not rule.negated
    return ignored


def package_files(root: Path = REPO_ROOT) -> list[str]:
    """Every file the package holds, relative to `root`, sorted."""
    ignore_file = root / ".funcignore"
    rules = parse_ignore(ignore_file.read_text(encoding="utf-8")) if ignore_file.exists() else []
    found: list[str] = []
    for folder, directories, files in os.walk(root):
        base = Path(folder).relative_to(root).as_posix()
        prefix = "" if base == "." else base + "/"
        directories[:] = sorted(d for d in directories if not is_ignored(prefix + d, True, rules))
        found.extend(prefix + f for f in files if not is_ignored(prefix + f, False, rules))
    return sorted(found)


def build_package(out_dir: Path, root: Path = REPO_ROOT) -> Path:
    """Writes `out_dir/tenantflow-app.zip` (replacing any earlier zip there) and returns its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.zip"):
        old.unlink()
    target = out_dir / PACKAGE_NAME
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for relative in package_files(root):
            info = zipfile.ZipInfo(relative, date_time=ZIP_TIMESTAMP)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, (root / relative).read_bytes())
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.deploy.package", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "dist", help="directory of the zip (default dist/)")
    args = parser.parse_args(argv)
    target = build_package(args.out)
    with zipfile.ZipFile(target) as archive:
        names = archive.namelist()
    tops = sorted({name.split("/", 1)[0] + ("/" if "/" in name else "") for name in names})
    print(f"{target.relative_to(Path.cwd()) if target.is_relative_to(Path.cwd()) else target}: "
          f"{target.stat().st_size / 1024:.0f} KiB, {len(names)} files: {' '.join(tops)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
