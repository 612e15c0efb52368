"""`tenantflow` run in this process, as tests call it: (exit code, stdout, stderr), never a traceback."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable

import pytest

from shared.cli import main

CliRun = Callable[..., tuple[int, str, str]]


def cli_runner(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> CliRun:
    def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main(list(args))
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        return code, out, err

    return run
