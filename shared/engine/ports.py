"""What the executor needs from the outside world. Implemented by shared.connections / shared.services.

The engine imports no Azure, database or HTTP SDK: it only calls these ports.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.engine.usage import TokenUsage
from shared.secret import Secret

if TYPE_CHECKING:
    from shared.engine.deadline import Deadline


class StepFailure(Exception):
    """A step failed for a reason the run should report (clear, one line, no secret). `code` is machine-readable,
    e.g. `budget_exceeded`, `insufficient_quota`, `content_filter`, `credential_not_found`, `endpoint_refused`."""

    def __init__(self, message: str, code: str = "step_failed", details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.details = details or {}


@dataclass(frozen=True)
class Connection:
    """What a model call needs to reach a deployment. Built from a static connection or at run time."""

    name: str
    kind: str = "azure_openai"  # azure_openai | openai
    endpoint: str = ""
    api_key: Secret | None = None  # None with auth="entra": keyless, via azure.identity
    auth: str = "key"  # key | entra
    api_version: str = "2024-10-21"
    title: str | None = None


@dataclass(frozen=True)
class ChatRequest:
    connection: Connection
    model: str
    messages: list[dict[str, Any]]
    temperature: float = 0.7
    max_completion_tokens: int | None = None
    response_format: str = "text"  # text | json_object | json_schema
    json_schema: dict[str, Any] | None = None  # with json_schema: {name, schema, strict}, as the API takes it
    tools: list[dict[str, Any]] | None = None  # OpenAI function tools: [{type: function, function: {name, …}}]
    tool_choice: str | dict[str, Any] | None = None  # auto | none | required | {type: function, function: {name}}
    stream: bool = False  # stream the answer (with usage in the last chunk), handing deltas to on_delta
    on_delta: Callable[[str], None] | None = None  # called with each content delta of a streamed answer
    step_id: str = ""
    iteration: int = 0
    deadline: Deadline | None = None  # the run's: no attempt starts, and no retry wait begins, past it


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the model wrote it


@dataclass(frozen=True)
class ChatResult:
    content: str
    role: str
    model: str
    finish_reason: str | None
    usage: TokenUsage
    endpoint_host: str
    attempt: int = 1  # which attempt succeeded (1-based)
    tool_calls: tuple[ToolCall, ...] = ()


class ModelPort(ABC):
    @abstractmethod
    async def chat(self, request: ChatRequest) -> ChatResult:
        """Runs one chat completion. Raises StepFailure with a clear message on a failure."""


class CredentialSource(ABC):
    @abstractmethod
    async def load(self, tenant_id: str, name: str) -> dict[str, Any]:
        """The tenant's credential `name` as fields: kind, endpoint, api_version, auth, api_key (a Secret, or None),
        plus any custom configs (plain) and secrets (Secret). Raises StepFailure(code="credential_not_found")."""


class EndpointPolicy(ABC):
    @abstractmethod
    def check(self, endpoint: str) -> str:
        """Returns the normalised endpoint or raises StepFailure(code='endpoint_refused') naming the reason."""
