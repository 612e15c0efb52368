"""The services of this worker process, built once on first use (never at import time)."""

from __future__ import annotations

import asyncio
from typing import Any

services_instance: Any = None
lock = asyncio.Lock()


async def services() -> Any:
    global services_instance
    if services_instance is None:
        async with lock:
            if services_instance is None:
                from shared.bootstrap import build_services

                services_instance = await build_services()
    return services_instance


def use(instance: Any) -> None:
    """Installs ready-made services (tests and `tenantflow serve` build their own)."""
    global services_instance
    services_instance = instance
