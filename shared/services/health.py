"""Health of the parts the app depends on: each is `ok`, `down` or `not_configured` (a part that is not set up,
such as the run queue locally, is reported as such and is not a failure)."""

from __future__ import annotations

from dataclasses import dataclass

from shared.services.run_queue import RunQueue
from shared.storage.ports import Stores

OK, DOWN, NOT_CONFIGURED = "ok", "down", "not_configured"


@dataclass(frozen=True)
class ComponentHealth:
    status: str  # ok | down | not_configured
    error: str | None = None  # the kind of failure (an exception class name), never its text: it may hold a DSN
    backend: str | None = None


@dataclass(frozen=True)
class HealthReport:
    components: dict[str, ComponentHealth]

    @property
    def healthy(self) -> bool:
        """False only when a configured component is down."""
        return all(c.status != DOWN for c in self.components.values())


async def check_health(stores: Stores, queue: RunQueue) -> HealthReport:
    """Pings the store and the queue."""
    components: dict[str, ComponentHealth] = {}
    try:
        await stores.health.ping()
        components["store"] = ComponentHealth(OK, backend=stores.backend)
    except Exception as exc:
        components["store"] = ComponentHealth(DOWN, type(exc).__name__, stores.backend)
    if not queue.configured:
        components["queue"] = ComponentHealth(NOT_CONFIGURED)
    else:
        try:
            await queue.ping()
            components["queue"] = ComponentHealth(OK)
        except Exception as exc:
            components["queue"] = ComponentHealth(DOWN, type(exc).__name__)
    return HealthReport(components)
