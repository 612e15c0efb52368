"""The services of this worker process, built once on first use (never at import time).

A build that fails (the store is down at start-up, say) is not remembered: the next request tries again, so
the app recovers without a restart once the store is back."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.bootstrap import Services

services_instance: Services | None = None
lock = asyncio.Lock()


async def services() -> Services:
    """The process's services; raises what building them raised (StoreUnavailable, SettingsError, …)."""
    instance = services_instance
    if instance is not None:
        return instance
    return await build_once()


async def build_once() -> Services:
    global services_instance
    async with lock:
        if services_instance is None:
            from shared.bootstrap import build_services

            services_instance = await build_services()
        return services_instance


def use(instance: Services | None) -> None:
    """Installs ready-made services (tests and `tenantflow serve` build their own)."""
    global services_instance
    services_instance = instance
