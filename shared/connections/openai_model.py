"""The model port. A chat call posts its JSON straight through the process's checked aiohttp session
(shared/connections/outbound.py) and reads the answer as JSON; a streamed call goes through the real `openai` SDK
(its aiohttp client over the same session). Per (endpoint, credential) one cached `ModelClient` holds the URL, the
headers and, once a stream needs it, the SDK client. One retry loop honours `retry-after-ms` / `retry-after` but
never retries `insufficient_quota` or a content-filter refusal, whichever way the call went.

Why two ways: the SDK's request building (httpx2 URLs, its transform and pydantic parsing) cost more CPU than the
rest of a run, and importing it a second of start-up; a streamed call lasts long enough for neither to matter.
`openai` and `azure.identity` are imported when first needed."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from shared.connections.allowlist import EndpointAllowlist
from shared.connections.outbound import AddressRefused, OutboundSession, RedirectRefused, outbound_refusal
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
from shared.engine.worst_case import MAX_RETRY_WAIT
from shared.secret import redact_text

COGNITIVE_SCOPE = "https://cognitiveservices.azure.com/.default"
USER_AGENT = "tenantflow"


def client_key(connection: Connection) -> tuple[str, ...]:
    """Identity of a client: endpoint + credential. A rotated key gives a new key (and a new client)."""
    secret = connection.api_key.reveal() if connection.api_key is not None else ""
    fingerprint = hashlib.sha256(secret.encode()).hexdigest()[:16] if secret else "-"
    return (connection.kind, connection.endpoint, connection.api_version, connection.auth, fingerprint)


class ModelClient:
    """What calls to one endpoint with one credential need: URL prefix, headers, and (built when a streamed call
    first needs it) the openai SDK client."""

    def __init__(self, connection: Connection, cache: ClientCache) -> None:
        self.connection = connection
        self.cache = cache
        endpoint = connection.endpoint.rstrip("/")
        api_key = connection.api_key.reveal() if connection.api_key is not None else ""
        self.headers = {"content-type": "application/json", "accept": "application/json", "user-agent": USER_AGENT}
        if connection.kind == "openai":
            self.prefix, self.query = endpoint or "https://api.openai.com/v1", ""
            self.headers["authorization"] = f"Bearer {api_key}"
        else:
            self.prefix = f"{endpoint}/openai/deployments/"
            self.query = "?" + urlencode({"api-version": connection.api_version})
            if connection.auth != "entra":
                self.headers["api-key"] = api_key
        self.sdk_client: Any = None

    def chat_url(self, model: str) -> str:
        if self.connection.kind == "openai":
            return f"{self.prefix}/chat/completions"
        return f"{self.prefix}{quote(model, safe='')}/chat/completions{self.query}"

    async def request_headers(self) -> dict[str, str]:
        if self.connection.kind != "openai" and self.connection.auth == "entra":
            return {**self.headers, "authorization": f"Bearer {await self.cache.entra_token_provider()()}"}
        return self.headers

    def sdk(self) -> Any:
        if self.sdk_client is None:
            self.sdk_client = self.cache.build_sdk_client(self.connection)
        return self.sdk_client


class ClientCache:
    """LRU of ModelClients sharing one outbound session (one connection pool per host)."""

    def __init__(self, outbound: OutboundSession, max_clients: int = 256, token_credential: Any = None) -> None:
        self.outbound = outbound
        self.max_clients = max_clients
        self.clients: OrderedDict[tuple[str, ...], ModelClient] = OrderedDict()
        self.by_identity: dict[tuple[str, ...], tuple[str, ...]] = {}  # (kind, endpoint, auth) → current key
        self.http_client: Any = None
        self.token_credential = token_credential
        self.token_provider: Any = None

    def get(self, connection: Connection) -> ModelClient:
        key = client_key(connection)
        client = self.clients.get(key)
        if client is not None:
            self.clients.move_to_end(key)
            return client
        identity = key[:4]
        previous = self.by_identity.get(identity)
        if previous is not None:  # same endpoint, other key: the key was rotated; drop the old client
            self.clients.pop(previous, None)
        client = ModelClient(connection, self)
        self.clients[key] = client
        self.by_identity[identity] = key
        while len(self.clients) > self.max_clients:
            old_key, _ = self.clients.popitem(last=False)
            self.by_identity = {i: k for i, k in self.by_identity.items() if k != old_key}
        return client

    def build_sdk_client(self, connection: Connection) -> Any:
        """An openai SDK client (building one costs ~20 ms, and the first import of the SDK about a second)."""
        import openai

        from shared.connections.sdk_transport import checked_http_client

        if self.http_client is None:
            self.http_client = checked_http_client(self.outbound)
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
        await self.outbound.close()
        if self.token_credential is not None and hasattr(self.token_credential, "close"):
            await self.token_credential.close()


@dataclass(frozen=True)
class Retry:
    """A failed attempt that may be tried again: the failure to report if it was the last, and the wait."""

    failure: StepFailure
    delay: float


class OpenAIModelPort(ModelPort):
    def __init__(self, endpoints: EndpointAllowlist, clients: ClientCache | None = None, max_attempts: int = 4,
                 timeout: float = 120.0, sleep: Any = asyncio.sleep, resolver: Any = None) -> None:
        """`resolver` (an aiohttp AbstractResolver) replaces DNS for every model call: the seam tests use."""
        self.endpoints = endpoints
        self.clients = clients or ClientCache(OutboundSession(endpoints, resolver))
        self.max_attempts = max_attempts
        self.timeout = timeout
        self.sleep = sleep

    async def chat(self, request: ChatRequest) -> ChatResult:
        connection = request.connection
        self.endpoints.check(connection.endpoint)
        if not is_model_name(request.model):  # it goes into the URL path; its value is not echoed
            raise StepFailure(f"the model name is not a deployment name ({MODEL_NAME_RULE})", "invalid_model")
        client = self.clients.get(connection)
        host = urlsplit(connection.endpoint).hostname or ""
        body = request_body(request)
        payload = b"" if request.stream else json.dumps(body).encode()  # a stream goes through the SDK
        deadline = request.deadline
        for attempt in range(1, self.max_attempts + 1):
            timeout = self.timeout
            if deadline is not None:  # an attempt gets at most the time the run has left
                timeout = min(timeout, deadline.check(f"before model call attempt {attempt} to {host}"))
            outcome = await (self.attempt_streamed(client, body, request, host, attempt, timeout) if request.stream
                             else self.attempt(client, payload, request, host, attempt, timeout))
            if isinstance(outcome, ChatResult):
                return outcome
            if deadline is not None:
                left = deadline.remaining()
                if left <= 0:  # the attempt's timeout was the time left
                    raise deadline.exceeded(f"during model call attempt {attempt} to {host} ({outcome.failure})")
                if attempt < self.max_attempts and left <= outcome.delay:  # no attempt could follow the wait
                    raise deadline.exceeded(f"before model call attempt {attempt + 1} to {host}, which would wait "
                                            f"{round(outcome.delay, 2):g} s ({outcome.failure})")
            if attempt == self.max_attempts:
                raise outcome.failure
            await self.sleep(outcome.delay)
        raise StepFailure(f"no answer from {host}", "model_unavailable")  # pragma: no cover - loop always returns

    async def attempt(self, client: ModelClient, payload: bytes, request: ChatRequest, host: str,
                      attempt: int, timeout: float) -> ChatResult | Retry:
        """One POST of the chat completion's JSON, answered within `timeout` seconds."""
        import aiohttp

        try:
            answer = await self.clients.outbound.post(client.chat_url(request.model), await client.request_headers(),
                                                      payload, timeout)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            refused = outbound_refusal(exc)  # raised here, or by the resolver and wrapped by aiohttp
            if refused is not None:
                raise StepFailure(str(refused), refusal_code(refused)) from None
            return unreachable(host, attempt, connection_lost=True)
        if answer.status == 200:
            return to_result(answer_json(answer.body, host), host, attempt, request.model)
        try:
            error: Any = json.loads(answer.body)
        except ValueError:
            error = None
        return status_failure(answer.status, error, answer.headers, host, request, attempt)

    async def attempt_streamed(self, client: ModelClient, body: dict[str, Any], request: ChatRequest, host: str,
                               attempt: int, timeout: float) -> ChatResult | Retry:
        """One streamed call through the openai SDK; its errors are judged like a plain call's. The SDK's timeout
        bounds each read; with a run deadline the whole stream must also end within `timeout`."""
        import openai

        try:
            stream = await client.sdk().chat.completions.create(**body, timeout=timeout)
        except openai.APIStatusError as exc:
            return status_failure(exc.status_code, exc.body, exc.response.headers, host, request, attempt)
        except openai.APIConnectionError as exc:
            refused = outbound_refusal(exc)
            if refused is not None:
                raise StepFailure(str(refused), refusal_code(refused)) from None
            return unreachable(host, attempt, connection_lost=True)
        if request.deadline is None:
            return await read_stream(stream, request, host, attempt)
        try:
            async with asyncio.timeout(request.deadline.remaining()):
                return await read_stream(stream, request, host, attempt)
        except TimeoutError:
            await stream.close()
            raise request.deadline.exceeded(f"while the answer from {host} was streamed") from None

    async def close(self) -> None:
        await self.clients.close()


def refusal_code(refused: AddressRefused | RedirectRefused) -> str:
    return "address_refused" if isinstance(refused, AddressRefused) else "redirect_refused"


def unreachable(host: str, attempt: int, connection_lost: bool, headers: Any = None) -> Retry:
    what = "unreachable" if connection_lost else "failing"
    return Retry(StepFailure(f"the model endpoint {host} is {what} after {attempt} attempts", "model_unavailable"),
                 retry_delay(headers, attempt))


def status_failure(status: int, error: Any, headers: Any, host: str, request: ChatRequest, attempt: int) -> Retry:
    """An endpoint's error answer: a failure that may be retried (429, 5xx), or raised at once."""
    code = error_code(error)
    if status == 429:
        if code == "insufficient_quota":
            raise StepFailure(f"the model provider at {host} refused: insufficient quota (not retried)",
                              "insufficient_quota")
        return Retry(StepFailure(f"rate limited by {host} after {attempt} attempts", "rate_limited"),
                     retry_delay(headers, attempt))
    if status >= 500:
        return unreachable(host, attempt, connection_lost=False, headers=headers)
    if status == 400 and code == "content_filter":
        raise StepFailure(f"the prompt was blocked by the content filter of {host}", "content_filter")
    if status in (400, 422):
        message = safe_message(error, status, request.connection)
        raise StepFailure(f"the model at {host} rejected the request: {message}", "bad_request")
    if status == 401:
        raise StepFailure(f"authentication failed at {host}: check the credential's key or role",
                          "authentication_failed")
    if status == 403:
        raise StepFailure(f"permission denied at {host}", "permission_denied")
    if status == 404:
        raise StepFailure(f"deployment {request.model!r} not found at {host}", "deployment_not_found")
    raise StepFailure(f"the model at {host} answered HTTP {status}", "model_error")


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


def error_code(body: Any) -> str | None:
    """The `code` (else `type`) of an error answer's JSON, `{"error": {…}}` or the inner object."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            code = inner.get("code") or inner.get("type")
            return code if isinstance(code, str) else None
    return None


def safe_message(body: Any, status: int, connection: Connection | None = None) -> str:
    """Up to 300 characters of the endpoint's error message, without the connection's key, or anything that looks
    like a key (an endpoint that echoes what it was sent must not plant the key in run history)."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            key = connection.api_key.reveal() if connection is not None and connection.api_key is not None else ""
            return redact_text(inner["message"][:600], (key,) if key else ())[:300]
    return f"HTTP {status}"


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
