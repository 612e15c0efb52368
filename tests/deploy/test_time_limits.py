"""A flow's worst case from its steps, and defaults that keep sync runs inside the front end's limit."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from shared.bootstrap import build_services
from shared.connections.openai_model import MAX_RETRY_WAIT, OpenAIModelPort
from shared.engine.model import Step
from shared.engine.parser import parse_flow, parse_flow_file
from shared.engine.worst_case import (
    ModelCallLimits,
    WorstCase,
    flow_worst_case,
    flow_worst_case_seconds,
    step_worst_case_seconds,
)
from shared.services.metering import CLOSE_RETRY_SECONDS, FUNCTION_TIMEOUT
from shared.settings import FUNCTION_TIMEOUT_SECONDS, Settings, SettingsError
from tests.cli_runner import cli_runner

ROOT = Path(__file__).resolve().parent.parent.parent
LIMITS = ModelCallLimits(timeout_seconds=10, max_attempts=3, max_retry_wait_seconds=5)  # one call: 30 + 10 = 40 s
FRONT_END_LIMIT = 230  # seconds the Azure front end waits for an HTTP answer


def chat(step_id: str) -> str:
    return f"""
      - id: {step_id}
        kind: chat_completion
        connection: default
        model: gpt-4o-mini
        user_prompt: hi
"""


def worst(text: str) -> float:
    return flow_worst_case_seconds(parse_flow("id: f\nsteps:" + text, "f.yaml"), LIMITS)


def function_timeout_seconds() -> int:
    hours, minutes, seconds = (int(p) for p in json.loads((ROOT / "host.json").read_text())["functionTimeout"]
                               .split(":"))
    return hours * 3600 + minutes * 60 + seconds


def test_one_model_call_is_every_attempt_at_its_timeout_plus_the_waits_between():
    assert LIMITS.worst_case_seconds() == 40
    assert worst(chat("a")) == 40
    assert worst(chat("a") + chat("b")) == 80


def test_if_takes_its_longer_branch_and_try_its_steps_then_catch():
    branches = """
      - id: choose
        kind: if
        condition: "{{ true }}"
        then:""" + chat("a").replace("\n      ", "\n          ") + """
        else:""" + (chat("b") + chat("c")).replace("\n      ", "\n          ")
    assert worst(branches) == 80
    guarded = """
      - id: guard
        kind: try
        steps:""" + chat("a").replace("\n      ", "\n          ") + """
        catch:""" + chat("b").replace("\n      ", "\n          ")
    assert worst(guarded) == 80


def loop(**fields) -> Step:
    body = [Step(id="a", kind="chat_completion", fields={"model": "m"}, line=3)]
    return Step(id="each", kind="for_each", fields={"as": "x", **fields}, line=1, blocks={"steps": body})


@pytest.mark.parametrize("fields, rounds", [
    ({"items": "{{ inputs.xs }}", "max_iterations": 7}, 7),
    ({"items": "{{ inputs.xs }}"}, 100),                                   # the declared default bound
    ({"items": [1, 2, 3], "max_iterations": 50}, 3),                        # a literal list is shorter than the bound
    ({"items": "{{ inputs.xs }}", "max_iterations": 10, "concurrency": 4}, 3),   # ceil(10 / 4) rounds
])
def test_for_each_runs_its_body_per_round(fields, rounds):
    assert step_worst_case_seconds(loop(**fields), 40) == rounds * 40


def test_a_loop_bound_only_known_at_run_time_is_unbounded_and_an_empty_body_costs_nothing():
    assert step_worst_case_seconds(loop(items="{{ xs }}", max_iterations="{{ inputs.n }}"), 40) == math.inf
    assert step_worst_case_seconds(Step(id="e", kind="for_each", fields={"max_iterations": "{{ n }}"}, line=1,
                                        blocks={"steps": []}), 40) == 0


def test_defaults_keep_a_call_under_the_sync_limit_and_three_calls_under_function_timeout():
    settings = Settings()
    call = ModelCallLimits(settings.model_timeout_seconds, settings.model_max_attempts, MAX_RETRY_WAIT)
    assert call.worst_case_seconds() <= settings.sync_limit_seconds < FRONT_END_LIMIT
    assert 3 * call.worst_case_seconds() < function_timeout_seconds()


def test_shipped_flows_single_calls_answer_sync_and_the_batch_goes_to_the_queue():
    settings = Settings()
    call = ModelCallLimits(settings.model_timeout_seconds, settings.model_max_attempts, MAX_RETRY_WAIT)
    seconds = {path.stem: flow_worst_case_seconds(parse_flow_file(path), call)
               for path in sorted((ROOT / "flows").glob("*.yaml"))}
    for name in ("support-reply", "grounded-answer", "ticket-webhook"):
        assert seconds[name] == call.worst_case_seconds() <= settings.sync_limit_seconds
    assert seconds["triage-batch"] == 50 * call.worst_case_seconds() > settings.sync_limit_seconds


def test_time_settings_are_read_and_checked():
    settings = Settings.from_env({"TENANTFLOW_MODEL_TIMEOUT_SECONDS": "20", "TENANTFLOW_MODEL_MAX_ATTEMPTS": "2",
                                  "TENANTFLOW_SYNC_LIMIT_SECONDS": "120", "TENANTFLOW_POSTGRES_POOL_SIZE": "3"})
    assert (settings.model_timeout_seconds, settings.model_max_attempts, settings.sync_limit_seconds,
            settings.postgres_pool_size) == (20, 2, 120, 3)
    for name, value, message in [
        ("TENANTFLOW_MODEL_MAX_ATTEMPTS", "2.5", "TENANTFLOW_MODEL_MAX_ATTEMPTS: not an integer: '2.5'"),
        ("TENANTFLOW_MODEL_MAX_ATTEMPTS", "0", "TENANTFLOW_MODEL_MAX_ATTEMPTS: must be between 1 and 10, got 0"),
        ("TENANTFLOW_SYNC_LIMIT_SECONDS", "300", "TENANTFLOW_SYNC_LIMIT_SECONDS: must be between 1 and 230, got 300"),
        ("TENANTFLOW_MODEL_TIMEOUT_SECONDS", "soon", "TENANTFLOW_MODEL_TIMEOUT_SECONDS: not a number: 'soon'"),
        ("TENANTFLOW_POSTGRES_ENTRA", "yes", "TENANTFLOW_POSTGRES_ENTRA: must be true or false, got 'yes'"),
    ]:
        with pytest.raises(SettingsError) as error:
            Settings.from_env({name: value})
        assert str(error.value) == message


async def test_the_app_s_model_port_uses_the_time_settings(tmp_path):
    settings = dataclasses.replace(Settings(), sqlite_path=tmp_path / "t.db", model_timeout_seconds=12,
                                   model_max_attempts=2)
    services = await build_services(settings)
    try:
        assert isinstance(services.model, OpenAIModelPort)
        assert (services.model.timeout, services.model.max_attempts) == (12, 2)
    finally:
        await services.stores.close()


def test_the_run_deadline_ends_a_run_before_function_timeout_with_time_left_to_record_it():
    assert FUNCTION_TIMEOUT_SECONDS == function_timeout_seconds() == FUNCTION_TIMEOUT.total_seconds()
    deadline = Settings().run_deadline_seconds
    assert deadline + CLOSE_RETRY_SECONDS <= function_timeout_seconds()  # the closing transaction's retries fit
    assert Settings().sync_limit_seconds < deadline
    example = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    assert float(example["TENANTFLOW_RUN_DEADLINE_SECONDS"]) == deadline
    assert f"{{ name: 'TENANTFLOW_RUN_DEADLINE_SECONDS', value: '{deadline:g}' }}" in (
        ROOT / "infra" / "main.bicep").read_text()


def test_a_run_deadline_at_or_past_function_timeout_is_refused_at_load():
    assert Settings.from_env({"TENANTFLOW_RUN_DEADLINE_SECONDS": "300"}).run_deadline_seconds == 300
    for value in ("600", "900"):
        with pytest.raises(SettingsError) as error:
            Settings.from_env({"TENANTFLOW_RUN_DEADLINE_SECONDS": value})
        assert str(error.value) == ("TENANTFLOW_RUN_DEADLINE_SECONDS: must be below host.json functionTimeout (600 s), "
                                    f"leaving time to record the run's end; got {value}")
    with pytest.raises(SettingsError, match=r"^TENANTFLOW_RUN_DEADLINE_SECONDS: not a number: 'soon'$"):
        Settings.from_env({"TENANTFLOW_RUN_DEADLINE_SECONDS": "soon"})


def test_the_worst_case_names_the_step_that_weighs_most():
    flow = parse_flow("id: f\nsteps:" + chat("a") + """
      - id: each
        kind: for_each
        items: "{{ inputs.xs }}"
        as: x
        max_iterations: 4
        steps:""" + chat("b").replace("\n      ", "\n          ") + chat("c"), "f.yaml")
    worst = flow_worst_case(flow, LIMITS)
    assert (worst.seconds, worst.step_id, worst.step_seconds) == (240, "each", 160)
    quick = parse_flow("id: f\nsteps:\n  - {id: v, kind: declare_variable, name: v, type: string, value: x}", "f.yaml")
    assert flow_worst_case(quick, LIMITS) == WorstCase(0, None, 0)


def test_validate_warns_of_a_flow_whose_worst_case_exceeds_the_run_deadline(monkeypatch, capsys):
    for name in ("TENANTFLOW_MODEL_TIMEOUT_SECONDS", "TENANTFLOW_MODEL_MAX_ATTEMPTS",
                 "TENANTFLOW_RUN_DEADLINE_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    cli = cli_runner(monkeypatch, capsys)
    code, out, err = cli("validate", str(ROOT / "flows" / "triage-batch.yaml"),
                         str(ROOT / "flows" / "support-reply.yaml"))
    assert code == 0 and "triage-batch.yaml: ok" in out and "support-reply.yaml: ok" in out
    assert err.count("warning") == 1
    assert ("triage-batch.yaml: warning: flow triage-batch: worst case of 9750 s exceeds the run deadline of 570 s "
            "(TENANTFLOW_RUN_DEADLINE_SECONDS); step each_ticket dominates with 9750 s (one model call: up to 195 s)"
            ) in err
    monkeypatch.setenv("TENANTFLOW_MODEL_TIMEOUT_SECONDS", "2")
    monkeypatch.setenv("TENANTFLOW_MODEL_MAX_ATTEMPTS", "1")
    code, out, err = cli("validate", str(ROOT / "flows" / "triage-batch.yaml"))  # 50 × 2 s fits in 570 s
    assert code == 0 and "warning" not in err
    monkeypatch.setenv("TENANTFLOW_RUN_DEADLINE_SECONDS", "600")
    code, out, err = cli("validate", str(ROOT / "flows" / "triage-batch.yaml"))
    assert code == 2 and "TENANTFLOW_RUN_DEADLINE_SECONDS: must be below host.json functionTimeout (600 s)" in err
