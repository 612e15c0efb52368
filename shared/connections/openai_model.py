"""The model port over the real `openai` SDK: one cached client per (endpoint, credential), a shared HTTP pool
(the SDK's aiohttp client, with checked addresses and no redirects: shared/connections/outbound.py), and a retry
loop that honours `retry-after-ms` / `retry-after` but never retries `insufficient_quota` or a content-filter
refusal. `openai` and `azure.identity` are imported when the first client is built."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections import OrderedDict
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from shared.connections.allowlist import EndpointAllowlist
from shared.engine.model_names import MODEL_NAME_RULE, is_model_name
from shared.engine.ports import (
    ChatRequest,
    ChatResult,
    Connection,
    ModelPort,
    StepFailure,
    ToolCall,
)
from shared.engine.usage import TokenUsage
from shared.secret import redact_text

COGNITIVE_SCOPE = "https://cognitiveservices.azure.com/.default"
MAX_RETRY_WAIT = 30.0


def client_key(connection: Connection) -> tuple[str, ...]:
    """Identity of a client: endpoint + credential. A rotated key gives a new key (and a new client)."""
    secret = connection.api_key.reveal() if connection.api_key is not None else ""
    fingerprint = hashlib.sha256(secret.encode()).hexdigest()[:16] if secret else "-"
    return (connection.kind, connection.endpoint, connection.api_version, connection.auth, fingerprint)


class ClientCache:
    """LRU of openai clients sharing one HTTP connection pool. Building a client costs ~20 ms; reuse it."""

    def __init__(self, http_client_factory: Callable[[], Any], max_clients: int = 256,
                 token_credential: Any = None) -> None:
        self.http_client_factory = http_client_factory
        self.max_clients = max_clients
        self.clients: OrderedDict[tuple[str, ...], Any] = OrderedDict()
        self.by_identity: dict[tuple[str, ...], tuple[str, ...]] = {}  # (kind, endpoint, auth) → current key
        self.http_client: Any = None
        self.token_credential = token_credential
        self.token_provider: Any = None

    def get(self, connection: Connection) -> Any:
        key = client_key(connection)
        client = self.clients.get(key)
        if client is not None:
            self.clients.move_to_end(key)
            return client
        identity = key[:4]
        previous = self.by_identity.get(identity)
        if previous is not None:  # same endpoint, other key: the key was rotated; drop the old client
            self.clients.pop(previous, None)
        client = self.build(connection)
        self.clients[key] = client
        self.by_identity[identity] = key
        while len(self.clients) > self.max_clients:
            old_key, _ = self.clients.popitem(last=False)
            self.by_identity = {i: k for i, k in self.by_identity.items() if k != old_key}
        return client

    def build(self, connection: Connection) -> Any:
        import openai

        if self.http_client is None:
            self.http_client = self.http_client_factory()
        api_key = connection.api_key.reveal() if connection.api_key is not None else None
        if connection.kind == "openai":
            return openai.AsyncOpenAI(api_key=api_key, base_url=connection.endpoint or None, max_retries=0,
                                      http_client=self.http_client)
        if connection.auth == "entra":
            return openai.AsyncAzureOpenAI(azure_endpoint=connection.endpoint, api_version=connection.api_version,
                                           azure_ad_token_provider=self.entra_token_provider(), max_retries=0,
                                           http_client=self.http_client)
        return openai.AsyncAzureOpenAI(azure_endpoint=connection.endpoint, api_version=connection.api_version,
                                       api_key=api_key, max_retries=0, http_client=self.http_client)

    def entra_token_provider(self) -> Any:
        if self.token_provider is None:
            from azure.identity.aio import DefaultAzureCredential, get_bearer_token_provider

            self.token_credential = self.token_credential or DefaultAzureCredential()
            self.token_provider = get_bearer_token_provider(self.token_credential, COGNITIVE_SCOPE)
        return self.token_provider

    async def close(self) -> None:
        self.clients.clear()
        self.by_identity.clear()
        if self.http_client is not None:
            await self.http_client.aclose()
            self.http_client = None
        if self.token_credential is not None and hasattr(self.token_credential, "close"):
            await self.token_credential.close()


class OpenAIModelPort(ModelPort):
    def __init__(self, endpoints: EndpointAllowlist, clients: ClientCache | None = None, max_attempts: int = 4,
                 timeout: float = 120.0, sleep: Any = asyncio.sleep, resolver: Any = None) -> None:
        """`resolver` (an aiohttp AbstractResolver) replaces DNS for every model call: the seam tests use."""
        self.endpoints = endpoints
        self.clients = clients or ClientCache(lambda: outbound_http_client(endpoints, resolver))
        self.max_attempts = max_attempts
        self.timeout = timeout
        self.sleep = sleep

    async def chat(self, request: ChatRequest) -> ChatResult:
        import openai

        from shared.connections.outbound import AddressRefused, outbound_refusal

        connection = request.connection
        self.endpoints.check(connection.endpoint)
        if not is_model_name(request.model):  # it goes into the URL path; its value is not echoed
            raise StepFailure(f"the model name is not a deployment name ({MODEL_NAME_RULE})", "invalid_model")
        client = self.clients.get(connection)
        host = urlsplit(connection.endpoint).hostname or ""
        body = request_body(request)
        for attempt in range(1, self.max_attempts + 1):
            try:
                if request.stream:
                    stream = await client.chat.completions.create(**body, timeout=self.timeout)
                    return await read_stream(stream, request, host, attempt)
                # The SDK's own client, errors and auth, without its typed layer: the JSON goes out as built and the
                # answer is read as JSON (its request transform and pydantic parsing cost more than the rest of a
                # run; measured in bench/model_transport_bench.py).
                raw = await client.post("/chat/completions", cast_to=bytes, body=body,
                                        options={"timeout": self.timeout})
            except openai.RateLimitError as exc:
                if error_code(exc) == "insufficient_quota":
                    raise StepFailure(f"the model provider at {host} refused: insufficient quota (not retried)",
                                      "insufficient_quota") from None
                if attempt == self.max_attempts:
                    raise StepFailure(f"rate limited by {host} after {attempt} attempts", "rate_limited") from None
                await self.sleep(retry_delay(exc.response.headers, attempt))
                continue
            except openai.BadRequestError as exc:
                if error_code(exc) == "content_filter":
                    raise StepFailure(f"the prompt was blocked by the content filter of {host}",
                                      "content_filter") from None
                raise StepFailure(f"the model at {host} rejected the request: {safe_message(exc, connection)}",
                                  "bad_request") from None
            except openai.AuthenticationError:
                raise StepFailure(f"authentication failed at {host}: check the credential's key or role",
                                  "authentication_failed") from None
            except openai.PermissionDeniedError:
                raise StepFailure(f"permission denied at {host}", "permission_denied") from None
            except openai.NotFoundError:
                raise StepFailure(f"deployment {request.model!r} not found at {host}", "deployment_not_found") from None
            except (openai.InternalServerError, openai.APIConnectionError) as exc:
                refusal = outbound_refusal(exc)
                if refusal is not None:
                    code = "address_refused" if isinstance(refusal, AddressRefused) else "redirect_refused"
                    raise StepFailure(str(refusal), code) from None
                if attempt == self.max_attempts:
                    what = "unreachable" if isinstance(exc, openai.APIConnectionError) else "failing"
                    raise StepFailure(f"the model endpoint {host} is {what} after {attempt} attempts",
                                      "model_unavailable") from None
                headers = exc.response.headers if isinstance(exc, openai.APIStatusError) else {}
                await self.sleep(retry_delay(headers, attempt))
                continue
            except openai.APIStatusError as exc:
                if 300 <= exc.status_code < 400:  # the transport raises first; kept in case a client skips it
                    raise StepFailure(f"the model endpoint {host} answered with a redirect (HTTP {exc.status_code}); "
                                      "redirects are never followed", "redirect_refused") from None
                raise StepFailure(f"the model at {host} answered HTTP {exc.status_code}", "model_error") from None
            return to_result(answer_json(raw, host), host, attempt, request.model)
        raise StepFailure(f"no answer from {host}", "model_unavailable")  # pragma: no cover - loop always returns

    async def close(self) -> None:
        await self.clients.close()


def outbound_http_client(endpoints: EndpointAllowlist, resolver: Any) -> Any:
    """The checked aiohttp client (imported when the first client is built: aiohttp and httpx2 cost ~0.3 s)."""
    from shared.connections.outbound import checked_http_client

    return checked_http_client(endpoints, resolver)


def request_body(request: ChatRequest) -> dict[str, Any]:
    """The JSON body of a chat completions request (also the keyword arguments of `chat.completions.create`)."""
    arguments: dict[str, Any] = {
        "model": request.model,
        "messages": request.messages,
        "temperature": request.temperature,
    }
    if request.max_completion_tokens is not None:
        arguments["max_completion_tokens"] = request.max_completion_tokens
    if request.response_format == "json_object":
        arguments["response_format"] = {"type": "json_object"}
    elif request.response_format == "json_schema" and request.json_schema is not None:
        arguments["response_format"] = {"type": "json_schema", "json_schema": request.json_schema}
    if request.tools:
        arguments["tools"] = request.tools
        if request.tool_choice is not None:
            arguments["tool_choice"] = request.tool_choice
    if request.stream:
        arguments["stream"] = True
        arguments["stream_options"] = {"include_usage": True}  # the last chunk carries the usage: never lost
    return arguments


async def read_stream(stream: Any, request: ChatRequest, host: str, attempt: int) -> ChatResult:
    """Reads a streamed answer to its end (the usage chunk), handing each content delta to `request.on_delta`.
    A stream that breaks off after it started is not retried (its deltas were already handed on)."""
    import openai

    content: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    role, model, finish, usage = "assistant", "", None, None
    try:
        async for chunk in stream:
            model = chunk.model or model
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices or []:
                if choice.index != 0:
                    continue
                delta = choice.delta
                role = getattr(delta, "role", None) or role
                finish = choice.finish_reason or finish
                if delta.content:
                    content.append(delta.content)
                    if request.on_delta is not None:
                        request.on_delta(delta.content)
                for part in getattr(delta, "tool_calls", None) or []:
                    call = calls.setdefault(part.index, {"id": "", "name": "", "arguments": ""})
                    call["id"] = part.id or call["id"]
                    if part.function is not None:
                        call["name"] += part.function.name or ""
                        call["arguments"] += part.function.arguments or ""
    except (openai.APIError, OSError) as exc:
        raise StepFailure(f"the answer stream from {host} broke off ({type(exc).__name__}); not retried, "
                          "since part of it was already streamed", "model_unavailable") from None
    finally:
        await stream.close()
    return ChatResult(
        content="".join(content),
        role=role,
        model=model if is_model_name(model) else request.model,
        finish_reason=finish,
        usage=TokenUsage.from_openai(usage),
        endpoint_host=host,
        attempt=attempt,
        tool_calls=tuple(ToolCall(c["id"], c["name"], c["arguments"]) for _, c in sorted(calls.items())),
    )


def answer_json(raw: bytes, host: str) -> dict[str, Any]:
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise StepFailure(f"the model at {host} answered with something that is not a chat completion",
                          "model_error")
    return answer


def to_result(answer: dict[str, Any], host: str, attempt: int, requested_model: str) -> ChatResult:
    """A chat completion (its JSON); a `model` it names that is not a deployment name is replaced by the requested
    one (the field reaches the ledger and CSV exports)."""
    choices = answer.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = choice.get("message")
    message = message if isinstance(message, dict) else {}
    calls = message.get("tool_calls")
    model = answer.get("model")
    content = message.get("content")
    try:
        usage = TokenUsage.from_openai(answer.get("usage"))
    except (TypeError, ValueError):
        raise StepFailure(f"the model at {host} answered with token counts that are not numbers",
                          "model_error") from None
    return ChatResult(
        content=content if isinstance(content, str) else "",
        role=message.get("role") or "assistant",
        model=model if isinstance(model, str) and is_model_name(model) else requested_model,
        finish_reason=choice.get("finish_reason"),
        usage=usage,
        endpoint_host=host,
        attempt=attempt,
        tool_calls=tuple(ToolCall(str(call.get("id", "")), str(call["function"].get("name", "")),
                                  call["function"].get("arguments") or "")
                         for call in (calls if isinstance(calls, list) else ())
                         if isinstance(call, dict) and isinstance(call.get("function"), dict)),
    )


def error_code(exc: Any) -> str | None:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            return inner.get("code") or inner.get("type")
    return getattr(exc, "code", None)


def safe_message(exc: Any, connection: Connection | None = None) -> str:
    """Up to 300 characters of the endpoint's error message, without the connection's key, or anything that looks
    like a key (an endpoint that echoes what it was sent must not plant the key in run history)."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            key = connection.api_key.reveal() if connection is not None and connection.api_key is not None else ""
            return redact_text(inner["message"][:600], (key,) if key else ())[:300]
    return f"HTTP {getattr(exc, 'status_code', '?')}"


def retry_delay(headers: Any, attempt: int) -> float:
    """`retry-after-ms`, then `retry-after` (seconds); otherwise exponential backoff with jitter."""
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name) if headers is not None else None
        if value is None:
            continue
        try:
            return min(max(float(value) / divisor, 0.0), MAX_RETRY_WAIT)
        except ValueError:
            continue
    return min(0.5 * 2 ** (attempt - 1), 8.0) * (0.5 + random.random() / 2)
