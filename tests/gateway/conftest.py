"""The gateway in-process: the app's registered functions served over real HTTP in the test's event loop
(`tenantflow serve`'s ASGI app), a real store, and the emulator upstream. Sync openai clients run in a thread (the
server shares the test's loop)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from shared.bootstrap import build_services
from shared.emulator.server import running_emulator
from shared.functions import runtime
from shared.functions.local_server import serving_in_this_loop
from shared.secret import Secret
from tests.backends import postgres_backend, sqlite_backend

SERVED = {"prod-chat": "gpt-4o-mini-2024-07-18", "mystery": "acme-llm-7"}


@pytest.fixture(scope="session")
def upstream():
    """An emulator whose deployment `prod-chat` reports gpt-4o-mini-2024-07-18, and `mystery` a model no price
    file knows."""
    with running_emulator(models=SERVED) as handle:
        yield handle


class Gateway:
    def __init__(self, svc: Any, base: str, upstream: Any) -> None:
        self.svc = svc
        self.base = base  # http://127.0.0.1:PORT (no /api)
        self.upstream = upstream

    async def tenant(self, tenant_id: str, alias: str = "chat", deployment: str = "prod-chat",
                     upstream_key: str = "sk-upstream-secret-0123456789abcdef", price_as: str | None = None) -> str:
        created = await self.svc.tenants.add(tenant_id, tenant_id.title())
        await self.svc.credentials.set(tenant_id, "foundry", "azure_openai", endpoint=self.upstream.base_url,
                                       api_key=Secret(upstream_key))
        await self.svc.aliases.set(tenant_id, alias, credential="foundry", deployment=deployment, price_as=price_as)
        return created.api_key.reveal()


async def serving(settings: Any, upstream: Any):
    settings = dataclasses.replace(settings, allowed_hosts=("127.0.0.1",), default_endpoint=upstream.base_url)
    svc = await build_services(settings)
    runtime.use(svc)
    try:
        async with serving_in_this_loop() as base:
            yield Gateway(svc, base, upstream)
    finally:
        runtime.use(None)
        await svc.close()


async def on_store(store: str, tmp_path: Any, upstream: Any):
    if store == "sqlite":
        async for served in serving(await sqlite_backend.provision(tmp_path), upstream):
            yield served
        return
    settings = await postgres_backend.provision(tmp_path)
    try:
        async for served in serving(settings, upstream):
            yield served
    finally:
        await postgres_backend.dispose(settings)


@pytest.fixture
async def gateway(tmp_path, upstream):
    """The gateway on SQLite."""
    async for served in on_store("sqlite", tmp_path, upstream):
        yield served


@pytest.fixture
async def gateway_on_postgres(tmp_path, upstream):
    async for served in on_store("postgres", tmp_path, upstream):
        yield served


@pytest.fixture(params=["sqlite", "postgres"])
async def gateway_on_each_store(request, tmp_path, upstream):
    """The gateway on SQLite, then on PostgreSQL."""
    async for served in on_store(request.param, tmp_path, upstream):
        yield served
