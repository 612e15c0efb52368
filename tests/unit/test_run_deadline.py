"""The run deadline: a run still going on at its limit ends `failed` with deadline_exceeded, naming the step and the
limit; every call the model served is in the ledger, the budget counter equals the ledger, nothing stays reserved,
and finished steps stay in the run's history. In-memory stores; time is either the test's clock, moved by a fake
model whose calls "take" seconds (no real wait), or real and short, against the emulator's latency fault."""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import UTC, datetime

import azure.functions as func
import pytest

from shared.bootstrap import build_services
from shared.clock import SystemClock
from shared.connections.allowlist import EndpointAllowlist
from shared.connections.openai_model import OpenAIModelPort
from shared.engine.deadline import Deadline, DeadlineExceeded
from shared.engine.ports import ChatRequest, ChatResult, Connection
from shared.functions import runtime
from shared.functions.local_server import registered_functions
from shared.secret import Secret
from shared.settings import Settings
from shared.storage.models import Budget, period_of
from tests.backends.fixtures import fresh_encryption_keys
from tests.fakes import FakeModel, ManualClock
from tests.memory.stores import InMemoryRunQueue, InMemoryStores


def deadline_after(seconds: float) -> Deadline:
    end = time.monotonic() + seconds
    return Deadline(seconds, lambda: end - time.monotonic())

NOW = datetime(2026, 3, 14, 9, 0, tzinfo=UTC)
TICKETS = ["Site down!", "Typo on the pricing page", "Slow checkout", "Refund please", "Login loops"]


class SlowModel(FakeModel):
    """Answers like FakeModel; each call takes `seconds` on the test's clock."""

    def __init__(self, clock: ManualClock, seconds: float) -> None:
        super().__init__()
        self.clock, self.seconds = clock, seconds

    async def chat(self, request: ChatRequest) -> ChatResult:
        result = await super().chat(request)
        self.clock.advance(seconds=self.seconds)
        return result


async def services(tmp_path, clock, model=None, queue=None, **changes):
    settings = dataclasses.replace(Settings.from_env({}), sqlite_path=tmp_path / "unused.db",
                                   allowed_hosts=("127.0.0.1",), encryption_keys=fresh_encryption_keys(), **changes)
    svc = await build_services(settings, stores=InMemoryStores(clock), queue=queue, clock=clock, model=model)
    created = await svc.tenants.add("contoso")
    await svc.stores.budgets.set_budget(Budget("contoso", 10**9, None))  # every call holds a lease while it runs
    return svc, created.api_key.reveal()


async def books_balance(svc, run, period: str) -> list:
    """The run's ledger records, after checking that counter = ledger = the run's usage and nothing is reserved."""
    records = await svc.stores.usage.list_for_run("contoso", run.run_id)
    counters = await svc.stores.budgets.counters("contoso", period)
    assert counters.reserved_tokens == 0 and await svc.stores.bookkeeping.leases("contoso") == []
    assert counters.used_tokens == sum(r.total_tokens for r in records) == run.usage["total_tokens"] > 0
    assert run.usage["model_calls"] == len(records)
    return records


def step_trail(run) -> list[tuple[str, int, str]]:
    return [(s.id, s.iteration, s.status) for s in run.steps if s.id in ("classify", "keep_label", "count_failure")]


async def test_a_queued_run_past_its_deadline_fails_with_every_served_call_billed(tmp_path):
    clock = ManualClock(NOW)
    model, queue = SlowModel(clock, seconds=200), InMemoryRunQueue()
    svc, _ = await services(tmp_path, clock, model, queue)
    try:
        started = await svc.runs.start("contoso", "triage-batch", {"tickets": TICKETS}, "queue", wait=False)
        [message] = queue.receive()
        outcome = await svc.queue_worker.process(json.dumps(message))
        run = outcome.run
        assert outcome.status == "executed" and run.run_id == started.run.run_id
        assert (run.status, run.usage["error_code"]) == ("failed", "deadline_exceeded")  # not left running
        assert run.error == ("step keep_label: deadline_exceeded: the run's limit of 570 s "
                             "(TENANTFLOW_RUN_DEADLINE_SECONDS) passed before the step started")
        assert run.usage["error_details"] == {"limit_seconds": 570, "source": "TENANTFLOW_RUN_DEADLINE_SECONDS",
                                              "step": "keep_label"}
        # three calls started in time (at 0, 200 and 400 s) and were served: all three are billed; the `try` around
        # them did not catch the deadline (no failure counted), and no fourth call was made
        assert len(model.requests) == 3
        assert step_trail(run) == [("classify", 0, "succeeded"), ("keep_label", 0, "succeeded"),
                                   ("classify", 1, "succeeded"), ("keep_label", 1, "succeeded"),
                                   ("classify", 2, "succeeded"), ("keep_label", 2, "failed")]
        records = await books_balance(svc, run, period_of(NOW))
        assert sorted(r.iteration for r in records) == [0, 1, 2]
        stored = await svc.runs.find("contoso", run.run_id)
        assert stored is not None and stored.status == "failed" and stored.steps == run.steps
        again = await svc.queue_worker.process(json.dumps(message))  # a redelivery finds it finished: no retry loop
        assert again.status == "duplicate" and len(model.requests) == 3
    finally:
        await svc.close()


async def test_a_sync_http_run_has_the_sync_limit_as_its_deadline(tmp_path):
    clock = ManualClock(NOW)
    model = SlowModel(clock, seconds=150)
    svc, key = await services(tmp_path, clock, model)  # no queue: the long flow runs in the request
    runtime.use(svc)
    try:
        start_run = {f.get_function_name(): f.get_user_function() for f in registered_functions()}["start_run"]
        request = func.HttpRequest(method="POST", url="http://localhost/api/flows/triage-batch/runs",
                                   headers={"x-api-key": key}, params={}, route_params={"flow": "triage-batch"},
                                   body=json.dumps({"inputs": {"tickets": TICKETS}}).encode())
        response = await start_run(request)
        answer = json.loads(response.get_body())
        assert response.status_code == 200 and answer["status"] == "failed"
        assert answer["error_code"] == "deadline_exceeded"
        assert answer["error"] == ("step keep_label: deadline_exceeded: the run's limit of 200 s "
                                   "(TENANTFLOW_SYNC_LIMIT_SECONDS) passed before the step started")
        assert len(model.requests) == 2 and answer["usage"]["total_tokens"] > 0
        run = await svc.runs.find("contoso", answer["run_id"])
        assert run is not None and len(await books_balance(svc, run, period_of(NOW))) == 2
    finally:
        runtime.use(None)
        await svc.close()


async def test_a_model_call_is_cut_at_the_deadline_and_the_call_served_before_stays_billed(tmp_path, emulator):
    svc, _ = await services(tmp_path, SystemClock(), run_deadline_seconds=1.5, default_endpoint=emulator.base_url,
                            default_api_key=Secret("sk-deadline"))
    try:
        before = emulator.stats()["requests"]
        run = await svc.runs.run("contoso", "triage-batch",
                                 {"tickets": ["Site down!", "Slow checkout [[fault:latency=4000]]", "Typo"]}, "cli")
        assert (run.status, run.usage["error_code"]) == ("failed", "deadline_exceeded")
        assert run.error.startswith("step classify: deadline_exceeded: the run's limit of 1.5 s "
                                    "(TENANTFLOW_RUN_DEADLINE_SECONDS) passed during model call attempt 1 to 127.0.0.1")
        # the slow call was cut at the deadline (its 45 s timeout capped), not retried, and the third never made
        assert emulator.stats()["requests"] - before == 2
        assert step_trail(run) == [("classify", 0, "succeeded"), ("keep_label", 0, "succeeded"),
                                   ("classify", 1, "failed")]
        [served] = await books_balance(svc, run, period_of(datetime.now(UTC)))
        assert (served.step_id, served.iteration) == ("classify", 0)
    finally:
        await svc.close()


def chat_request(emulator, text: str, deadline: Deadline, stream: bool = False) -> ChatRequest:
    connection = Connection("default", "azure_openai", emulator.base_url, Secret("sk-deadline"))
    return ChatRequest(connection, "gpt-4o-mini", [{"role": "user", "content": text}], stream=stream,
                       step_id="ask", deadline=deadline)


async def test_no_retry_wait_begins_and_no_attempt_starts_that_could_not_end_in_time(emulator):
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    port = OpenAIModelPort(EndpointAllowlist(("127.0.0.1",)), max_attempts=3, sleep=sleep)
    try:
        before = emulator.stats()["requests"]
        with pytest.raises(DeadlineExceeded) as rate_limited:  # 429 asks for 50 ms; 30 ms are left
            await port.chat(chat_request(emulator, "hi [[fault:429]]", Deadline(60, lambda: 0.03, "a test limit")))
        assert str(rate_limited.value) == (
            "deadline_exceeded: the run's limit of 60 s (a test limit) passed before model call attempt 2 to "
            "127.0.0.1, which would wait 0.05 s (rate limited by 127.0.0.1 after 1 attempts)")
        assert waits == [] and emulator.stats()["requests"] - before == 1
        with pytest.raises(DeadlineExceeded) as passed:
            await port.chat(chat_request(emulator, "hi", Deadline(60, lambda: 0.0, "a test limit")))
        assert "passed before model call attempt 1 to 127.0.0.1" in str(passed.value)
        assert emulator.stats()["requests"] - before == 1  # no attempt was made
        answered = await port.chat(chat_request(emulator, "hi [[fault:429;times=1]]", deadline_after(30)))
        assert answered.attempt == 2 and waits == [0.05]  # with time left, the wait and the retry happen
    finally:
        await port.close()


async def test_a_streamed_answer_still_coming_at_the_deadline_is_cut(emulator):
    port = OpenAIModelPort(EndpointAllowlist(("127.0.0.1",)), max_attempts=1)
    try:
        with pytest.raises(DeadlineExceeded) as cut:
            await port.chat(chat_request(emulator, "tell me a story [[fault:chunk-delay=300]]",
                                         deadline_after(0.5), stream=True))
        assert str(cut.value).endswith("passed while the answer from 127.0.0.1 was streamed")
    finally:
        await port.close()


FAN_OUT = """
id: fan-out
inputs:
  xs: {type: list, required: true}
steps:
  - id: each
    kind: for_each
    items: "{{ inputs.xs }}"
    as: x
    concurrency: 2
    steps:
      - id: ask
        kind: chat_completion
        connection: default
        model: gpt-4o-mini
        user_prompt: "{{ x }}"
outputs:
  done: "{{ true }}"
"""


async def test_concurrent_iterations_start_no_round_past_the_deadline(tmp_path):
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "fan-out.yaml").write_text(FAN_OUT)
    clock = ManualClock(NOW)
    model = SlowModel(clock, seconds=100)  # two calls at once: the round ends 200 s later on the test's clock
    svc, _ = await services(tmp_path, clock, model, flows_dir=tmp_path / "flows", run_deadline_seconds=150)
    try:
        run = await svc.runs.run("contoso", "fan-out", {"xs": ["a", "b", "c", "d"]}, "cli")
        assert run.error == ("step ask: deadline_exceeded: the run's limit of 150 s "
                             "(TENANTFLOW_RUN_DEADLINE_SECONDS) passed before the step started")
        assert sorted(r.messages[-1]["content"] for r in model.requests) == ["a", "b"]
        assert [(s.iteration, s.status) for s in run.steps if s.id == "ask"] == [  # after a failure no item starts
            (0, "succeeded"), (1, "succeeded"), (2, "failed")]
        assert len(await books_balance(svc, run, period_of(NOW))) == 2
    finally:
        await svc.close()
