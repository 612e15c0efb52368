"""Shared fixtures. Backend fixtures (sqlite / postgres / table, real servers) live in tests/backends/fixtures.py."""

pytest_plugins = ["tests.backends.fixtures"]
