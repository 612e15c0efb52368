"""What a run reports while it runs: step records and an observer that sees them as they happen.

A `RunObserver` is handed to `FlowExecutor.run`; the HTTP layer streams its events as SSE and the CLI prints them.
Its methods are called on the run's event loop and must return quickly (queue the event, do not await I/O). The
step passed is the run's live record: take `step.event()` (a JSON-ready snapshot) rather than keeping it. An
observer that raises is logged and ignored: watching a run never changes or stops it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from shared.engine.usage import TokenUsage

log = logging.getLogger(__name__)


@dataclass
class StepOutcome:
    id: str
    kind: str
    status: str  # running (while it runs) | succeeded | failed
    duration_ms: float
    iteration: int = 0
    usage: TokenUsage | None = None
    error: str | None = None
    error_code: str | None = None
    endpoint_host: str | None = None

    def event(self) -> dict[str, object]:
        """The `step` event of a streamed run: `{id, status, duration_ms, usage}` (+ iteration, kind, error)."""
        return {"id": self.id, "kind": self.kind, "iteration": self.iteration, "status": self.status,
                "duration_ms": round(self.duration_ms, 3), "usage": self.usage.as_dict() if self.usage else None,
                "error": self.error}


class RunObserver:
    """Default: sees nothing. Subclass and override what you need."""

    def step_started(self, step: StepOutcome) -> None:
        """A step begins (status `running`, duration 0)."""

    def step_finished(self, step: StepOutcome) -> None:
        """A step ended: status succeeded or failed, its duration and usage."""

    def token(self, step_id: str, iteration: int, delta: str) -> None:
        """A content delta of a `chat_completion` step with `stream: true`."""


class ObserverFanOut(RunObserver):
    """Hands every event to each of several observers (e.g. a streamed response and the run's trace)."""

    def __init__(self, *observers: RunObserver) -> None:
        self.observers = observers

    def step_started(self, step: StepOutcome) -> None:
        for observer in self.observers:
            notify(observer.step_started, step)

    def step_finished(self, step: StepOutcome) -> None:
        for observer in self.observers:
            notify(observer.step_finished, step)

    def token(self, step_id: str, iteration: int, delta: str) -> None:
        for observer in self.observers:
            notify(observer.token, step_id, iteration, delta)


class QueuedRunEvents(RunObserver):
    """A run's events in order, for a streamed response: `("step", {id, status, duration_ms, usage, …})` when a
    step starts or finishes and `("token", {step, iteration, delta})` for streamed content. Queuing never blocks
    the run; a reader that goes away leaves the run going. Iterate with `async for`; `close()` ends the stream
    (call it when the run is over, then send the run object as the last event)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, dict[str, object]] | None] = asyncio.Queue()

    def step_started(self, step: StepOutcome) -> None:
        self.queue.put_nowait(("step", step.event()))

    def step_finished(self, step: StepOutcome) -> None:
        self.queue.put_nowait(("step", step.event()))

    def token(self, step_id: str, iteration: int, delta: str) -> None:
        self.queue.put_nowait(("token", {"step": step_id, "iteration": iteration, "delta": delta}))

    def close(self) -> None:
        self.queue.put_nowait(None)

    async def __aiter__(self) -> AsyncIterator[tuple[str, dict[str, object]]]:
        while (event := await self.queue.get()) is not None:
            yield event


def notify(callback: Callable[..., None], *args: object) -> None:
    """Calls an observer method; an observer's failure is logged, never raised into the run."""
    try:
        callback(*args)
    except Exception:
        log.exception("run observer failed; the run goes on")
