"""Execution stage: runs a validated Flow. The only I/O goes through the injected ports."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from shared.engine.model import Flow, Step
from shared.engine.model_names import MODEL_NAME_RULE, is_model_name
from shared.engine.ports import ChatRequest, Connection, CredentialSource, EndpointPolicy, ModelPort, StepFailure
from shared.engine.templates import TemplateError, as_text, contains_secret, render
from shared.engine.usage import TokenUsage
from shared.engine.validator import TYPE_CHECKS
from shared.secret import Secret

HISTORY_ROLES = ("system", "developer", "user", "assistant")


@dataclass(frozen=True)
class RunContext:
    tenant_id: str
    tenant_name: str
    run_id: str
    trigger: str = "cli"


@dataclass
class StepOutcome:
    id: str
    kind: str
    status: str  # succeeded | failed
    duration_ms: float
    iteration: int = 0
    usage: TokenUsage | None = None
    error: str | None = None
    error_code: str | None = None
    endpoint_host: str | None = None


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

    async def run(self, flow: Flow, inputs: dict[str, Any], context: RunContext) -> RunOutcome:
        state = RunState(flow, context, inputs)
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
        iteration = state.next_iteration(step.id)
        started = time.perf_counter()
        outcome = StepOutcome(step.id, step.kind, "succeeded", 0.0, iteration)
        state.outcomes.append(outcome)
        try:
            await getattr(self, f"step_{step.kind}")(step, state, outcome)
        except ReturnSignal:
            raise
        except TemplateError as exc:
            outcome.status, outcome.error, outcome.error_code = "failed", str(exc), "template_error"
            raise StepFailure(f"step {step.id}: {exc}", "template_error") from None
        except StepFailure as exc:
            outcome.status, outcome.error, outcome.error_code = "failed", str(exc), exc.code
            if str(exc).startswith("step "):
                raise
            raise StepFailure(f"step {step.id}: {exc}", exc.code, exc.details) from None
        finally:
            outcome.duration_ms = (time.perf_counter() - started) * 1000

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

    # --- one method per step kind ---------------------------------------------------------------------------
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

    async def step_chat_completion(self, step: Step, state: RunState, outcome: StepOutcome) -> None:
        dynamic = step.get("dynamic_connection")
        if dynamic:
            connection = state.connections.get(dynamic)
            if connection is None:
                raise StepFailure(f"dynamic connection {dynamic!r} was not created in this run", "invalid_connection")
        else:
            name = step.get("connection") or "default"
            connection = self.static_connections.get(name)
            if connection is None:
                raise StepFailure(f"unknown static connection {name!r}", "invalid_connection")
        model = self.field(step, "model", state)
        if not is_model_name(model):  # the value is not shown: it may be anything a template produced
            raise StepFailure(f"field model: must render to a deployment name ({MODEL_NAME_RULE})", "invalid_model")
        temperature = self.field(step, "temperature", state)
        if not TYPE_CHECKS["number"](temperature) or not 0 <= temperature <= 2:
            raise StepFailure(f"field temperature: must be a number between 0 and 2, got {temperature!r}")
        max_tokens = self.field(step, "max_completion_tokens", state)
        if max_tokens is not None and (not TYPE_CHECKS["integer"](max_tokens) or max_tokens < 1):
            raise StepFailure(f"field max_completion_tokens: must be a positive integer, got {max_tokens!r}")
        request = ChatRequest(
            connection=connection,
            model=model,
            messages=self.messages(step, state),
            temperature=float(temperature),
            max_completion_tokens=max_tokens,
            response_format=step.get("response_format"),
            step_id=step.id,
            iteration=outcome.iteration,
        )
        result = await self.model.chat(request)
        outcome.usage = result.usage
        outcome.endpoint_host = result.endpoint_host
        state.usage = state.usage + result.usage
        value: dict[str, Any] = {
            "content": result.content,
            "role": result.role,
            "model": result.model,
            "finish_reason": result.finish_reason,
            "usage": result.usage.as_dict(),
        }
        if request.response_format == "json_object":
            try:
                value["json"] = json.loads(result.content)
            except json.JSONDecodeError:
                raise StepFailure("the model did not return valid JSON for response_format json_object",
                                  "invalid_json") from None
        state.scope[step.get("result")] = value

    def messages(self, step: Step, state: RunState) -> list[dict[str, Any]]:
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
        name = step.get("as")
        had, previous = name in state.scope, state.scope.get(name)
        try:
            for item in items:
                state.scope[name] = item
                await self.run_steps(step.blocks.get("steps", []), state)
        finally:
            if had:
                state.scope[name] = previous
            else:
                state.scope.pop(name, None)

    async def step_try(self, step: Step, state: RunState, outcome: StepOutcome) -> None:
        try:
            await self.run_steps(step.blocks.get("steps", []), state)
        except StepFailure as exc:
            name = step.get("error_variable")
            state.scope[name] = {"message": str(exc), "code": exc.code}
            await self.run_steps(step.blocks.get("catch", []), state)

    async def step_return(self, step: Step, state: RunState, outcome: StepOutcome) -> None:
        raise ReturnSignal(step.get("value"))


class RunState:
    def __init__(self, flow: Flow, context: RunContext, inputs: dict[str, Any]) -> None:
        self.context = context
        self.scope: dict[str, Any] = {
            "inputs": inputs,
            "tenant": {"id": context.tenant_id, "name": context.tenant_name},
            "run": {"id": context.run_id, "flow": flow.id, "trigger": context.trigger},
        }
        self.types: dict[str, str] = {}
        self.connections: dict[str, Connection] = {}
        self.outcomes: list[StepOutcome] = []
        self.usage = TokenUsage()
        self.counters: dict[str, int] = {}

    def next_iteration(self, step_id: str) -> int:
        count = self.counters.get(step_id, 0)
        self.counters[step_id] = count + 1
        return count

    def assign(self, name: str, var_type: str, value: Any) -> None:
        if value is not None and not TYPE_CHECKS[var_type](value):
            raise StepFailure(f"variable {name!r} is {var_type}, cannot hold {type(value).__name__}")
        self.types[name] = var_type
        self.scope[name] = value

    def failed(self, exc: StepFailure) -> RunOutcome:
        return RunOutcome("failed", None, self.outcomes, self.usage, str(exc), exc.code, exc.details)


def checked_history(history: Any) -> list[dict[str, Any]]:
    if not isinstance(history, list):
        raise StepFailure("field history: must be a list of {role, content}")
    messages = []
    for index, item in enumerate(history, 1):
        if not isinstance(item, dict) or "role" not in item or "content" not in item:
            raise StepFailure(f"field history: item {index} must be an object with role and content")
        if item["role"] not in HISTORY_ROLES:
            raise StepFailure(f"field history: item {index}: role must be one of {', '.join(HISTORY_ROLES)}")
        if contains_secret(item["content"]):
            raise StepFailure("field history: a secret cannot be rendered into a prompt", "secret_exposure")
        messages.append({"role": item["role"], "content": item["content"]})
    return messages


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
