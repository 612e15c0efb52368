"""Execution stage: runs a validated Flow. The only I/O goes through the injected ports."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from shared.engine.chat_template import chat_template_messages
from shared.engine.deadline import Deadline, DeadlineExceeded
from shared.engine.model import Flow, Step
from shared.engine.model_names import MODEL_NAME_RULE, is_model_name
from shared.engine.observer import RunObserver, StepOutcome, notify
from shared.engine.ports import (
    ChatRequest,
    ChatResult,
    Connection,
    CredentialSource,
    EndpointPolicy,
    ModelPort,
    StepFailure,
)
from shared.engine.schemas import schema_mismatch
from shared.engine.templates import TemplateError, as_text, contains_secret, render
from shared.engine.usage import TokenUsage
from shared.engine.validator import MAX_CONCURRENCY, TYPE_CHECKS
from shared.secret import Secret

HISTORY_ROLES = ("system", "developer", "user", "assistant", "tool")
__all__ = ["FlowExecutor", "RunContext", "RunOutcome", "RunObserver", "StepOutcome"]


@dataclass(frozen=True)
class RunContext:
    tenant_id: str
    tenant_name: str
    run_id: str
    trigger: str = "cli"
    deadline: Deadline | None = None  # checked before each step and passed to each model call


@dataclass
class RunOutcome:
    status: str  # succeeded | failed
    outputs: dict[str, Any] | None
    steps: list[StepOutcome]
    usage: TokenUsage
    error: str | None = None
    error_code: str | None = None
    error_details: dict[str, Any] = field(default_factory=dict)


class ReturnSignal(Exception):
    def __init__(self, value: Any) -> None:
        self.value = value


StepHandler = Callable[["FlowExecutor", Step, "RunState", StepOutcome], Awaitable[None]]


class FlowExecutor:
    def __init__(
        self,
        model: ModelPort,
        credentials: CredentialSource,
        endpoints: EndpointPolicy,
        static_connections: Mapping[str, Connection],
    ) -> None:
        self.model = model
        self.credentials = credentials
        self.endpoints = endpoints
        self.static_connections = static_connections

    async def run(self, flow: Flow, inputs: dict[str, Any], context: RunContext,
                  observer: RunObserver | None = None) -> RunOutcome:
        state = RunState.start(flow, context, inputs, observer or RunObserver())
        outputs: dict[str, Any] | None = None
        try:
            await self.run_steps(flow.steps, state)
            outputs = render_outputs(flow.outputs, state.scope)
        except ReturnSignal as signal:
            try:
                if signal.value is None:  # a bare `return` ends the run with the flow's outputs
                    outputs = render_outputs(flow.outputs, state.scope)
                else:
                    value = render_outputs({"value": signal.value}, state.scope)["value"]
                    outputs = value if isinstance(value, dict) else {"result": value}
            except StepFailure as exc:
                return state.failed(exc)
        except StepFailure as exc:
            return state.failed(exc)
        return RunOutcome("succeeded", outputs, state.outcomes, state.usage)

    async def run_steps(self, steps: list[Step], state: RunState) -> None:
        for step in steps:
            await self.run_step(step, state)

    async def run_step(self, step: Step, state: RunState) -> None:
        iteration = state.numbers.next(step.id)
        started = time.perf_counter()
        outcome = StepOutcome(step.id, step.kind, "running", 0.0, iteration)
        state.outcomes.append(outcome)
        notify(state.observer.step_started, outcome)
        try:
            if state.context.deadline is not None:
                state.context.deadline.check("before the step started")
            await STEP_HANDLERS[step.kind](self, step, state, outcome)
            outcome.status = "succeeded"
        except ReturnSignal:
            outcome.status = "succeeded"
            raise
        except TemplateError as exc:
            outcome.status, outcome.error, outcome.error_code = "failed", str(exc), "template_error"
            raise StepFailure(f"step {step.id}: {exc}", "template_error") from None
        except StepFailure as exc:
            outcome.status, outcome.error, outcome.error_code = "failed", str(exc), exc.code
            if str(exc).startswith("step "):
                raise
            if isinstance(exc, DeadlineExceeded):
                raise DeadlineExceeded(f"step {step.id}: {exc}", {**exc.details, "step": step.id}) from None
            raise StepFailure(f"step {step.id}: {exc}", exc.code, exc.details) from None
        finally:
            if outcome.status == "running":  # cancelled, or a bug: not a success
                outcome.status = "failed"
            outcome.duration_ms = (time.perf_counter() - started) * 1000
            notify(state.observer.step_finished, outcome)

    def field(self, step: Step, name: str, state: RunState) -> Any:
        try:
            return render(step.get(name), state.scope)
        except TemplateError as exc:
            raise StepFailure(f"field {name}: {exc}", "template_error") from None

    def text(self, step: Step, name: str, state: RunState) -> str:
        value = self.field(step, name, state)
        try:
            return as_text(value)
        except TemplateError as exc:
            raise StepFailure(f"field {name}: {exc}", "secret_exposure") from None

    # --- one method per step kind (dispatched through STEP_HANDLERS) -----------------------------------------
    async def step_declare_variable(self, step: Step, state: RunState, outcome: StepOutcome) -> None:
        value = self.field(step, "value", state)
        state.assign(step.get("name"), step.get("type"), value)

    async def step_set_variable(self, step: Step, state: RunState, outcome: StepOutcome) -> None:
        name = step.get("name")
        state.assign(name, state.types[name], self.field(step, "value", state))

    async def step_load_credential(self, step: Step, state: RunState, outcome: StepOutcome) -> None:
        name = self.field(step, "name", state)
        if not isinstance(name, str) or not name:
            raise StepFailure("field name: must render to a credential name")
        fields = await self.credentials.load(state.context.tenant_id, name)
        state.scope[step.get("result")] = fields

    async def step_create_azure_ai_connection(self, step: Step, state: RunState, outcome: StepOutcome) -> None:
        endpoint = self.field(step, "endpoint", state)
        if not isinstance(endpoint, str) or not endpoint:
            raise StepFailure("field endpoint: must render to a URL", "invalid_connection")
        endpoint = self.endpoints.check(endpoint)
        auth = step.get("auth")
        api_key = None
        if auth != "entra":
            raw_key = self.field(step, "api_key", state)
            if isinstance(raw_key, str) and raw_key:
                raw_key = Secret(raw_key)
            if not isinstance(raw_key, Secret) or not raw_key:
                raise StepFailure("field api_key: must render to a non-empty key (or set auth: entra)",
                                  "invalid_connection")
            api_key = raw_key
        api_version = self.field(step, "api_version", state) or "2024-10-21"
        host = urlsplit(endpoint).hostname or ""
        kind = "openai" if host == "api.openai.com" else "azure_openai"
        title = self.field(step, "title", state)
        name = step.get("connection_variable")
        state.connections[name] = Connection(name, kind, endpoint, api_key, auth, str(api_version),
                                             title if isinstance(title, str) else None)

    async def connection_for(self, step: Step, state: RunState) -> Connection:
        """`dynamic_connection` (created in this run) wins; else `connection`: a static connection of that name,
        or else the running tenant's own credential of that name (never another tenant's)."""
        dynamic = step.get("dynamic_connection")
        if dynamic:
            connection = state.connections.get(dynamic)
            if connection is None:
                raise StepFailure(f"dynamic connection {dynamic!r} was not created in this run", "invalid_connection")
            return connection
        name = step.get("connection") or "default"
        static = self.static_connections.get(name)
        if static is not None:
            return static
        return credential_connection(name, await self.credentials.load(state.context.tenant_id, name), self.endpoints)

    async def step_chat_completion(self, step: Step, state: RunState, outcome: StepOutcome) -> None:
        connection = await self.connection_for(step, state)
        model = self.field(step, "model", state)
        if not is_model_name(model):  # the value is not shown: it may be anything a template produced
            raise StepFailure(f"field model: must render to a deployment name ({MODEL_NAME_RULE})", "invalid_model")
        temperature = self.field(step, "temperature", state)
        if not TYPE_CHECKS["number"](temperature) or not 0 <= temperature <= 2:
            raise StepFailure(f"field temperature: must be a number between 0 and 2, got {temperature!r}")
        max_tokens = self.field(step, "max_completion_tokens", state)
        if max_tokens is not None and (not TYPE_CHECKS["integer"](max_tokens) or max_tokens < 1):
            raise StepFailure(f"field max_completion_tokens: must be a positive integer, got {max_tokens!r}")
        response_format = step.get("response_format")
        json_schema = None
        if isinstance(response_format, dict):
            json_schema = {"name": response_format["name"], "schema": response_format["schema"],
                           "strict": bool(response_format.get("strict", False))}
            response_format = "json_schema"
        tools = step.get("tools")
        observer, iteration = state.observer, outcome.iteration
        request = ChatRequest(
            connection=connection,
            model=model,
            messages=self.messages(step, state),
            temperature=float(temperature),
            max_completion_tokens=max_tokens,
            response_format=response_format,
            json_schema=json_schema,
            tools=[dict(tool) for tool in tools] if tools else None,
            tool_choice=tool_choice_of(step.get("tool_choice")),
            stream=bool(step.get("stream")),
            on_delta=(lambda delta: notify(observer.token, step.id, iteration, delta)) if step.get("stream") else None,
            step_id=step.id,
            iteration=iteration,
            deadline=state.context.deadline,
        )
        result = await self.model.chat(request)
        outcome.usage = result.usage
        outcome.endpoint_host = result.endpoint_host
        state.usage = state.usage + result.usage
        state.scope[step.get("result")] = result_value(result, request)

    def messages(self, step: Step, state: RunState) -> list[dict[str, Any]]:
        if "chat_template" in step.fields:
            return chat_template_messages(step.fields["chat_template"], state.scope)
        messages: list[dict[str, Any]] = []
        if "system_prompt" in step.fields:
            messages.append({"role": "system", "content": self.text(step, "system_prompt", state)})
        if "history" in step.fields:
            history = self.field(step, "history", state)
            if history is not None:
                messages.extend(checked_history(history))
        user = self.text(step, "user_prompt", state) if "user_prompt" in step.fields else ""
        context_text = ""
        if "context" in step.fields:
            context = self.field(step, "context", state)
            items = context if isinstance(context, list) else [context]
            try:
                context_text = "\n\n".join(as_text(item) for item in items if item is not None)
            except TemplateError as exc:
                raise StepFailure(f"field context: {exc}", "secret_exposure") from None
        if "prompt_template" in step.fields:
            template = self.text(step, "prompt_template", state)
            user = template.replace("@@context", context_text).replace("@@userPrompt", user)
        elif context_text:
            user = f"Context:\n{context_text}\n\n{user}" if user else f"Context:\n{context_text}"
        if user:
            messages.append({"role": "user", "content": user})
        if not messages:
            raise StepFailure("no messages to send: user_prompt, history and prompt_template are all empty")
        return messages

    async def step_if(self, step: Step, state: RunState, outcome: StepOutcome) -> None:
        branch = "then" if self.field(step, "condition", state) else "else"
        await self.run_steps(step.blocks.get(branch, []), state)

    async def step_for_each(self, step: Step, state: RunState, outcome: StepOutcome) -> None:
        items = self.field(step, "items", state)
        if isinstance(items, dict):
            items = [{"key": k, "value": v} for k, v in items.items()]
        if not isinstance(items, list):
            raise StepFailure(f"field items: must be a list, got {type(items).__name__}")
        limit = self.field(step, "max_iterations", state)
        if len(items) > limit:
            raise StepFailure(f"field items: {len(items)} items exceed max_iterations {limit}", "too_many_items")
        concurrency = self.field(step, "concurrency", state)
        if not TYPE_CHECKS["integer"](concurrency) or not 1 <= concurrency <= MAX_CONCURRENCY:
            raise StepFailure(f"field concurrency: must be an integer from 1 to {MAX_CONCURRENCY}, "
                              f"got {concurrency!r}")
        outputs: list[Any] = [None] * len(items)
        if concurrency == 1:
            await self.run_iterations_in_order(step, state, items, outputs)
        else:
            await self.run_iterations_concurrently(step, state, items, concurrency, outputs)
        if step.get("result"):
            state.scope[step.get("result")] = outputs

    async def run_iterations_in_order(self, step: Step, state: RunState, items: list[Any],
                                      outputs: list[Any]) -> None:
        name = step.get("as")
        had, previous = name in state.scope, state.scope.get(name)
        try:
            for index, item in enumerate(items):
                state.scope[name] = item
                await self.run_steps(step.blocks.get("steps", []), state)
                outputs[index] = self.iteration_output(step, state)
        finally:
            if had:
                state.scope[name] = previous
            else:
                state.scope.pop(name, None)

    async def run_iterations_concurrently(self, step: Step, state: RunState, items: list[Any], limit: int,
                                          outputs: list[Any]) -> None:
        """At most `limit` iterations at once, each in its own copy of the scope (the validator forbids setting
        an outer variable). After a failure no new iteration starts; running ones finish (their model calls are
        metered), then the failure of the lowest item index is raised. Step records and usage are merged in item
        order; names the body defines keep the last item's values, as in an ordered loop."""
        forks = [state.fork(step.get("as"), item, index, len(items)) for index, item in enumerate(items)]
        gate = asyncio.Semaphore(limit)
        failures: dict[int, StepFailure] = {}

        async def iterate(index: int) -> None:
            async with gate:
                if failures:
                    return
                try:
                    await self.run_steps(step.blocks.get("steps", []), forks[index])
                    outputs[index] = self.iteration_output(step, forks[index])
                except StepFailure as exc:
                    failures[index] = exc

        async with asyncio.TaskGroup() as group:
            for index in range(len(items)):
                group.create_task(iterate(index))
        state.join(forks, step.get("as"))
        if failures:
            raise failures[min(failures)]

    def iteration_output(self, step: Step, state: RunState) -> Any:
        if "output" not in step.fields:
            return None
        value = self.field(step, "output", state)
        if contains_secret(value):
            raise StepFailure("field output: a secret cannot be a loop output", "secret_exposure")
        return value

    async def step_try(self, step: Step, state: RunState, outcome: StepOutcome) -> None:
        try:
            await self.run_steps(step.blocks.get("steps", []), state)
        except DeadlineExceeded:  # no time is left for the catch steps either
            raise
        except StepFailure as exc:
            name = step.get("error_variable")
            state.scope[name] = {"message": str(exc), "code": exc.code}
            await self.run_steps(step.blocks.get("catch", []), state)

    async def step_return(self, step: Step, state: RunState, outcome: StepOutcome) -> None:
        raise ReturnSignal(step.get("value"))


STEP_HANDLERS: dict[str, StepHandler] = {
    "declare_variable": FlowExecutor.step_declare_variable,
    "set_variable": FlowExecutor.step_set_variable,
    "load_credential": FlowExecutor.step_load_credential,
    "create_azure_ai_connection": FlowExecutor.step_create_azure_ai_connection,
    "chat_completion": FlowExecutor.step_chat_completion,
    "if": FlowExecutor.step_if,
    "for_each": FlowExecutor.step_for_each,
    "try": FlowExecutor.step_try,
    "return": FlowExecutor.step_return,
}


class IterationNumbers:
    """Each step's iteration number (part of its usage key): 0, 1, 2… per step id in run order. Inside a concurrent
    for_each, iteration i of n numbers its k-th run of a step base + k·n + i (base: the count when the loop began),
    so numbers do not depend on timing and never collide; afterwards the count moves past every number used."""

    def __init__(self, outer: IterationNumbers | None = None, stride: int = 1, offset: int = 0) -> None:
        self.counts: dict[str, int] = {}
        self.outer = outer
        self.stride = stride
        self.offset = offset
        self.bases = dict(outer.counts) if outer is not None else {}

    def next(self, step_id: str) -> int:
        ordinal = self.counts.get(step_id, 0)
        self.counts[step_id] = ordinal + 1
        return self.number(step_id, ordinal)

    def number(self, step_id: str, ordinal: int) -> int:
        if self.outer is None:
            return ordinal
        return self.outer.number(step_id, self.bases.get(step_id, 0) + ordinal * self.stride + self.offset)

    def join(self, iterations: list[IterationNumbers]) -> None:
        for step_id in {s for numbers in iterations for s in numbers.counts}:
            most = max(numbers.counts.get(step_id, 0) for numbers in iterations)
            self.counts[step_id] = self.counts.get(step_id, 0) + most * len(iterations)


class RunState:
    """What one run (or one concurrent iteration of it) sees and records."""

    def __init__(self, context: RunContext, observer: RunObserver, scope: dict[str, Any],
                 numbers: IterationNumbers, types: dict[str, str] | None = None,
                 connections: dict[str, Connection] | None = None) -> None:
        self.context = context
        self.observer = observer
        self.scope = scope
        self.numbers = numbers
        self.types: dict[str, str] = types or {}
        self.connections: dict[str, Connection] = connections or {}
        self.outcomes: list[StepOutcome] = []
        self.usage = TokenUsage()

    @classmethod
    def start(cls, flow: Flow, context: RunContext, inputs: dict[str, Any], observer: RunObserver) -> RunState:
        scope = {
            "inputs": inputs,
            "tenant": {"id": context.tenant_id, "name": context.tenant_name},
            "run": {"id": context.run_id, "flow": flow.id, "trigger": context.trigger},
        }
        return cls(context, observer, scope, IterationNumbers())

    def fork(self, name: str, item: Any, index: int, count: int) -> RunState:
        """The state of one concurrent iteration: its own scope copy with the loop variable, no records yet."""
        return RunState(self.context, self.observer, {**self.scope, name: item},
                        IterationNumbers(self.numbers, count, index), dict(self.types), dict(self.connections))

    def join(self, forks: list[RunState], loop_variable: str) -> None:
        for fork in forks:
            self.outcomes.extend(fork.outcomes)
            self.usage = self.usage + fork.usage
        self.numbers.join([fork.numbers for fork in forks])
        if forks:
            last = forks[-1]
            for name, value in last.scope.items():
                if name != loop_variable and self.scope.get(name) is not value:
                    self.scope[name] = value
            self.types.update(last.types)
            self.connections.update(last.connections)

    def assign(self, name: str, var_type: str, value: Any) -> None:
        if value is not None and not TYPE_CHECKS[var_type](value):
            raise StepFailure(f"variable {name!r} is {var_type}, cannot hold {type(value).__name__}")
        self.types[name] = var_type
        self.scope[name] = value

    def failed(self, exc: StepFailure) -> RunOutcome:
        return RunOutcome("failed", None, self.outcomes, self.usage, str(exc), exc.code, exc.details)


def tool_choice_of(value: Any) -> str | dict[str, Any] | None:
    """`auto` / `none` / `required` as they are; a tool's name → `{type: function, function: {name}}`."""
    if value is None or value in ("auto", "none", "required") or isinstance(value, dict):
        return value
    return {"type": "function", "function": {"name": str(value)}}


def result_value(result: ChatResult, request: ChatRequest) -> dict[str, Any]:
    """A chat_completion's result object: content, role, model, finish_reason, usage, tool_calls (+ json)."""
    value: dict[str, Any] = {
        "content": result.content,
        "role": result.role,
        "model": result.model,
        "finish_reason": result.finish_reason,
        "usage": result.usage.as_dict(),
        "tool_calls": [],
    }
    for call in result.tool_calls:
        try:
            arguments = json.loads(call.arguments) if call.arguments else {}
        except json.JSONDecodeError:
            raise StepFailure(f"tool call {call.id} ({call.name}): the model's arguments are not valid JSON",
                              "invalid_json") from None
        value["tool_calls"].append({"id": call.id, "name": call.name, "arguments": arguments})
    if request.response_format in ("json_object", "json_schema") and not result.tool_calls:
        try:
            value["json"] = json.loads(result.content)
        except json.JSONDecodeError:
            raise StepFailure(f"the model did not return valid JSON for response_format {request.response_format}",
                              "invalid_json") from None
        if request.json_schema is not None:
            mismatch = schema_mismatch(value["json"], request.json_schema["schema"])
            if mismatch is not None:
                raise StepFailure(f"the model's JSON does not match schema {request.json_schema['name']}: "
                                  f"{mismatch}", "schema_mismatch")
    return value


def checked_history(history: Any) -> list[dict[str, Any]]:
    """History items → chat messages. An assistant item may carry `tool_calls` (as a chat_completion result gives
    them, `{id, name, arguments}`, or in the API's own shape) instead of content; a `tool` item answers one call
    by `tool_call_id` (content that is not text is sent as JSON)."""
    if not isinstance(history, list):
        raise StepFailure("field history: must be a list of {role, content}")
    messages = []
    for index, item in enumerate(history, 1):
        where = f"field history: item {index}"
        if not isinstance(item, dict) or "role" not in item:
            raise StepFailure(f"{where} must be an object with role and content")
        if item["role"] not in HISTORY_ROLES:
            raise StepFailure(f"{where}: role must be one of {', '.join(HISTORY_ROLES)}")
        if contains_secret(item):
            raise StepFailure("field history: a secret cannot be rendered into a prompt", "secret_exposure")
        calls = item.get("tool_calls")
        if calls and item["role"] != "assistant":
            raise StepFailure(f"{where}: only an assistant message carries tool_calls")
        if "content" not in item and not calls:
            raise StepFailure(f"{where} must be an object with role and content")
        message: dict[str, Any] = {"role": item["role"], "content": item.get("content")}
        if item["role"] == "tool":
            if not isinstance(item.get("tool_call_id"), str) or not item["tool_call_id"]:
                raise StepFailure(f"{where}: a tool message needs tool_call_id (the id of the call it answers)")
            message["tool_call_id"] = item["tool_call_id"]
            message["content"] = as_text(item.get("content"))
        if calls:
            message["tool_calls"] = api_tool_calls(calls, where)
        messages.append(message)
    return messages


def api_tool_calls(calls: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(calls, list):
        raise StepFailure(f"{where}: tool_calls must be a list")
    shaped = []
    for call in calls:
        if isinstance(call, dict) and isinstance(call.get("function"), dict):
            name, arguments = call["function"].get("name"), call["function"].get("arguments")
        elif isinstance(call, dict):
            name, arguments = call.get("name"), call.get("arguments")
        else:
            name = arguments = None
        if not isinstance(call, dict) or not isinstance(call.get("id"), str) or not isinstance(name, str):
            raise StepFailure(f"{where}: each tool call needs an id and a name")
        text = arguments if isinstance(arguments, str) else json.dumps(arguments or {}, ensure_ascii=False)
        shaped.append({"id": call["id"], "type": "function", "function": {"name": name, "arguments": text}})
    return shaped


def render_outputs(outputs: dict[str, Any], scope: dict[str, Any]) -> dict[str, Any]:
    rendered: dict[str, Any] = {}
    for name, template in outputs.items():
        try:
            value = render(template, scope)
        except TemplateError as exc:
            raise StepFailure(f"output {name}: {exc}", "template_error") from None
        if contains_secret(value):
            raise StepFailure(f"output {name}: a secret cannot be an output", "secret_exposure")
        rendered[name] = value
    return rendered


def credential_connection(name: str, fields: dict[str, Any], endpoints: EndpointPolicy) -> Connection:
    """The connection of a tenant credential's fields (CredentialSource.load); StepFailure when it cannot make model
    calls (another kind, no endpoint, an endpoint the policy refuses)."""
    kind = fields.get("kind") or "azure_openai"
    if kind not in ("azure_openai", "openai"):
        raise StepFailure(f"connection {name!r}: the tenant's credential {name} is of kind {kind}; a model call "
                          "needs azure_openai or openai", "invalid_connection")
    endpoint = fields.get("endpoint") or fields.get("base_url") or ""
    if not endpoint:
        raise StepFailure(f"connection {name!r}: the tenant's credential {name} has no endpoint",
                          "invalid_connection")
    api_key = fields.get("api_key")
    auth = fields.get("auth") or "key"
    return Connection(name, kind, endpoints.check(endpoint), api_key if isinstance(api_key, Secret) else None, auth,
                      str(fields.get("api_version") or "2024-10-21"))
