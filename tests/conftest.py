"""Shared fixtures. Backend fixtures (sqlite / postgres / table, real servers) live in tests/backends/fixtures.py."""

from __future__ import annotations

import pytest

from shared.emulator.server import running_emulator

pytest_plugins = ["tests.backends.fixtures"]


@pytest.fixture(scope="session")
def emulator():
    """The Azure OpenAI–compatible emulator over real HTTP on 127.0.0.1 (any non-empty key)."""
    with running_emulator() as handle:
        yield handle
