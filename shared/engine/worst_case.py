"""How long a flow can take at most, from its steps alone: model calls are the only slow steps.

One model call takes at most `attempts` × `timeout` plus a wait before each retry (`retry-after` is honoured up
to a cap). Steps in a list add up; `if` takes its longer branch; `try` its steps and then its `catch`; `for_each`
runs its body once per item, `concurrency` at a time, up to `max_iterations` (or the length of a literal list of
items). A bound that is a template cannot be known before the run: the flow's worst case is then unbounded.
The HTTP layer compares the result with TENANTFLOW_SYNC_LIMIT_SECONDS to answer a sync request with 202 instead;
`tenantflow validate` warns when it exceeds the run deadline (TENANTFLOW_RUN_DEADLINE_SECONDS), naming the step that
weighs most.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from shared.engine.model import Flow, Step

MAX_RETRY_WAIT = 30.0  # a model port honours a `retry-after` up to this many seconds


@dataclass(frozen=True)
class ModelCallLimits:
    timeout_seconds: float
    max_attempts: int
    max_retry_wait_seconds: float

    def worst_case_seconds(self) -> float:
        return self.max_attempts * self.timeout_seconds + (self.max_attempts - 1) * self.max_retry_wait_seconds


def flow_worst_case_seconds(flow: Flow, limits: ModelCallLimits) -> float:
    """Seconds, or `math.inf` when a loop bound is a template."""
    return flow_worst_case(flow, limits).seconds


@dataclass(frozen=True)
class WorstCase:
    seconds: float  # the flow's, or math.inf
    step_id: str | None  # the top-level step that weighs most (None: no step can take time)
    step_seconds: float


def flow_worst_case(flow: Flow, limits: ModelCallLimits) -> WorstCase:
    """The flow's worst case, and the top-level step that dominates it."""
    call = limits.worst_case_seconds()
    weights = [(step_worst_case_seconds(step, call), step.id) for step in flow.steps]
    heaviest = max(weights, default=(0.0, None), key=lambda weight: weight[0])
    return WorstCase(sum((seconds for seconds, _ in weights), 0.0),
                     heaviest[1] if heaviest[0] > 0 else None, heaviest[0])


def steps_worst_case_seconds(steps: list[Step], model_call_seconds: float) -> float:
    return sum((step_worst_case_seconds(step, model_call_seconds) for step in steps), 0.0)


def step_worst_case_seconds(step: Step, model_call_seconds: float) -> float:
    def block(name: str) -> float:
        return steps_worst_case_seconds(step.blocks.get(name, []), model_call_seconds)

    if step.kind == "chat_completion":
        return model_call_seconds
    if step.kind == "if":
        return max(block("then"), block("else"))
    if step.kind == "try":
        return block("steps") + block("catch")
    if step.kind == "for_each":
        body = block("steps")
        if body == 0:
            return 0.0
        return loop_rounds(step) * body
    return 0.0


def loop_rounds(step: Step) -> float:
    """How many times a `for_each` body runs one after another."""
    limit = step.get("max_iterations")
    if not isinstance(limit, int) or isinstance(limit, bool):
        return math.inf
    items = step.get("items")
    iterations = min(limit, len(items)) if isinstance(items, list) else limit
    concurrency = step.get("concurrency")
    parallel = concurrency if isinstance(concurrency, int) and not isinstance(concurrency, bool) and concurrency > 0 \
        else 1
    return float(math.ceil(iterations / parallel))
