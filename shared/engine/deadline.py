"""A run's deadline, as plain data: the limit it came from and a callable telling the seconds left.

The caller builds it from its own clock (the services' injected clock, so tests move time instead of waiting for
it); the engine only asks how much time remains. The executor checks it before each step, and a model port caps
each attempt's timeout, and refuses a retry wait, by what remains.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.engine.ports import StepFailure

DEADLINE_EXCEEDED = "deadline_exceeded"


class DeadlineExceeded(StepFailure):
    """The run's deadline passed. A `try` step does not catch it: the run ends `failed`."""

    def __init__(self, message: str, details: dict[str, Any]) -> None:
        super().__init__(message, DEADLINE_EXCEEDED, details)


@dataclass(frozen=True)
class Deadline:
    limit_seconds: float
    remaining: Callable[[], float]  # seconds left; zero or less once the deadline has passed
    source: str = "run deadline"  # what set the limit, named in the error (e.g. the setting)

    def exceeded(self, doing: str) -> DeadlineExceeded:
        """The failure to raise; `doing` says what could not be done in time ("before the step started")."""
        return DeadlineExceeded(f"{DEADLINE_EXCEEDED}: the run's limit of {self.limit_seconds:g} s ({self.source}) "
                                f"passed {doing}",
                                {"limit_seconds": self.limit_seconds, "source": self.source})

    def check(self, doing: str) -> float:
        """The seconds left; raises DeadlineExceeded when none are."""
        left = self.remaining()
        if left <= 0:
            raise self.exceeded(doing)
        return left
