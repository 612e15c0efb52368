"""An Azure OpenAI–compatible HTTP server for offline development and tests.

Routes: `POST /openai/deployments/{deployment}/chat/completions?api-version=…` (Azure), `POST /openai/v1/chat/
completions` and `POST /v1/chat/completions` (v1; model from the body); `GET /health`; `GET /_emulator/stats`
and `POST /_emulator/reset` (no auth).

Auth: `api-key: KEY` or `Authorization: Bearer TOKEN`. With no configured keys any non-empty one is accepted.

Replies are deterministic (`reply_for`): `[<model>] Re: <first 12 words of the last user message> #<digest>`, where
digest = first 8 hex of sha256 over the JSON of the messages. A system prompt asking to classify "as a, b or c" and
to "answer with one word" gets one of the options (chosen by the digest). With `response_format: json_object` the
reply is `{"answer": <that text>, "digest": <digest>}`. `usage` comes from `tokens.count_message_tokens` /
`count_tokens`; `max_completion_tokens` (or `max_tokens`) truncates the reply with finish_reason `length`. Models
named o1/o3/o4…/gpt-5… report 16 reasoning tokens (inside completion_tokens). A repeated prompt of ≥ 1024 tokens
reports cached_tokens in 128-token steps, as Azure does.

Faults, by header `x-emulator-fault: SPEC` or by a marker `[[fault:SPEC]]` in the last user message (flows can't
set headers), SPEC being one of `429` (retry-after-ms: 50, retry-after: 1), `429-quota` (code
insufficient_quota), `500`, `disconnect` (connection dropped mid-response), `latency=MS`, and for streams
`stream-break` (dropped after the first content chunk, no usage chunk) and `chunk-delay=MS` (between chunks);
append `;times=N` to fault only the first N matching requests (counted per spec + prompt digest, or per
`x-emulator-fault-key`). `[[content_filter]]` in the last user message gets Azure's content-filter 400. Faults can
also be given to `create_app(faults=…)` as a list of SPECs applied to every request.

Beyond text (see `answers`): `tools` get a tool call (finish_reason `tool_calls`) when `tool_choice` requires one
(`required` or a named function) or the last user message holds `[[tool]]` / `[[tool:NAME]]`; after a `tool`
message the reply is `[<model>] Tool result: <first 12 words of it> #<digest>`. `response_format: json_schema`
gets JSON with the schema's required properties, of their types. `n` > 1 gives n choices (choice i > 0 adds
` (choice i+1)`). Requests are checked as the service checks them: 400 for temperature outside 0–2,
max_tokens / max_completion_tokens < 1, n outside 1–128, a tool_choice naming no tool, and a deployment route
without `api-version`. `model` in a response is the served model (`create_app(models={deployment: model})`,
`tenantflow emulator --model DEPLOYMENT=MODEL`; by default a dated name for known model families, e.g.
gpt-4o-mini → gpt-4o-mini-2024-07-18), not the deployment name.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from shared.emulator.answers import ValueMaker, invalid_request, request_problem, tool_call_for, tool_to_call
from shared.emulator.tokens import count_message_tokens, count_tokens, message_text, split_tokens

FAULT_MARKER = re.compile(r"\[\[fault:(?P<spec>[^\]]+)\]\]")
CONTENT_FILTER_MARKER = "[[content_filter]]"
REASONING_MODELS = re.compile(r"^(o\d|gpt-5)")
SIGNALS = {"urgent": ("down", "outage", "urgent", "asap", "times out", "!"), "high": ("down", "outage", "urgent"),
           "low": ("typo", "cosmetic", "question"), "negative": ("bad", "angry", "wrong"),
           "positive": ("thanks", "great", "love")}
OPTIONS = re.compile(r"\bas ((?:[\w-]+, )*[\w-]+,? or [\w-]+)")
SAFE = {"filtered": False, "severity": "safe"}
FILTER_RESULTS = {"hate": SAFE, "self_harm": SAFE, "sexual": SAFE, "violence": SAFE}
SERVED_MODELS = {  # a deployment named as a model family reports the family's dated model
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18", "gpt-4o": "gpt-4o-2024-08-06", "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano": "gpt-4.1-nano-2025-04-14", "gpt-4.1": "gpt-4.1-2025-04-14", "o3-mini": "o3-mini-2025-01-31",
    "o4-mini": "o4-mini-2025-04-16", "gpt-5-mini": "gpt-5-mini-2025-08-07", "gpt-5": "gpt-5-2025-08-07",
}


def served_model(deployment: str, models: dict[str, str]) -> str:
    """The model a deployment reports: configured, else the dated name of its family, else the name itself."""
    return models.get(deployment) or SERVED_MODELS.get(deployment, deployment)


def digest_of(messages: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:8]


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return message_text(message.get("content"))
    return ""


def reply_for(model: str, messages: list[dict[str, Any]], json_object: bool = False) -> str:
    """The emulator's answer to `messages`, before any truncation."""
    options = classifier_options(messages)
    if options:
        text = last_user_text(messages).lower()
        for option in options:
            if option.lower() in text or any(word in text for word in SIGNALS.get(option.lower(), ())):
                return option
        return options[int(digest_of(messages), 16) % len(options)]
    words = FAULT_MARKER.sub("", last_user_text(messages)).split()
    text = f"[{model}] Re: {' '.join(words[:12])} #{digest_of(messages)}"
    if json_object:
        return json.dumps({"answer": text, "digest": digest_of(messages)})
    return text


def classifier_options(messages: list[dict[str, Any]]) -> list[str]:
    """A system prompt like "Classify … as low, normal or urgent. Answer with one word." → the options."""
    system = " ".join(message_text(m.get("content")) for m in messages if m.get("role") == "system")
    if "one word" not in system.lower():
        return []
    match = OPTIONS.search(system)
    return re.split(r",\s*|\s+or\s+", match.group(1)) if match else []


def fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:8]


@dataclass
class EmulatorState:
    api_keys: set[str] | None
    faults: list[str] = field(default_factory=list)
    requests: int = 0
    by_deployment: Counter[str] = field(default_factory=Counter)
    by_key: Counter[str] = field(default_factory=Counter)
    fault_counts: Counter[str] = field(default_factory=Counter)
    seen_prompts: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {"requests": self.requests, "by_deployment": dict(self.by_deployment),
                    "by_key_fingerprint": dict(self.by_key)}

    def reset(self) -> None:
        with self.lock:
            self.requests = 0
            self.by_deployment.clear()
            self.by_key.clear()
            self.fault_counts.clear()
            self.seen_prompts.clear()


def azure_error(status: int, code: str, message: str, **extra: Any) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"code": code, "message": message, "type": extra.pop("type", None), "param": None,
                              **extra}}


def create_app(api_keys: set[str] | None = None, faults: list[str] | None = None,
               models: dict[str, str] | None = None) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    state = EmulatorState(set(api_keys) if api_keys else None, list(faults or []))
    served = dict(models or {})

    def error_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
        return JSONResponse(body, status_code=status, headers=headers)

    async def chat(request: Request) -> Response:
        key = request.headers.get("api-key") or ""
        auth = request.headers.get("authorization", "")
        if not key and auth.lower().startswith("bearer "):
            key = auth[7:].strip()
        if not key or (state.api_keys is not None and key not in state.api_keys):
            status, body = azure_error(401, "401", "Access denied due to invalid subscription key or wrong API "
                                       "endpoint. Make sure to provide a valid key for an active subscription and "
                                       "use a correct regional API endpoint for your resource.")
            return error_response(status, body)
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return error_response(*azure_error(400, "invalid_request_error", "The request body is not valid JSON."))
        if not isinstance(body, dict):
            return error_response(400, invalid_request("The request body must be a JSON object.", None, None))
        if "deployment" in request.path_params and not request.query_params.get("api-version"):
            return error_response(*azure_error(400, "BadRequest", "Missing required query parameter: api-version"))
        deployment = request.path_params.get("deployment") or body.get("model") or ""
        messages = body.get("messages")
        if not deployment or not isinstance(messages, list) or not messages:
            return error_response(*azure_error(400, "invalid_request_error", "'messages' and a model are required."))
        problem = request_problem(body)
        if problem is not None:
            return error_response(400, problem)
        with state.lock:
            state.requests += 1
            state.by_deployment[deployment] += 1
            state.by_key[fingerprint(key)] += 1
        digest = digest_of(messages)
        user_text = last_user_text(messages)
        specs = list(state.faults)
        if request.headers.get("x-emulator-fault"):
            specs.append(request.headers["x-emulator-fault"])
        specs.extend(m.group("spec") for m in FAULT_MARKER.finditer(user_text))
        stream_faults: list[str] = []
        for spec in specs:
            fault = active_fault(state, spec, request.headers.get("x-emulator-fault-key") or digest)
            if fault is None:
                continue
            if fault == "stream-break" or fault.startswith("chunk-delay="):
                stream_faults.append(fault)
            elif fault.startswith("latency="):
                await asyncio.sleep(int(fault.split("=", 1)[1]) / 1000)
            elif fault == "429":
                status, err = azure_error(429, "429", "Requests to the ChatCompletions_Create Operation have "
                                          "exceeded the call rate limit. Please retry after 1 second.")
                return error_response(status, err, {"retry-after-ms": "50", "retry-after": "1"})
            elif fault == "429-quota":
                return error_response(*azure_error(429, "insufficient_quota", "You exceeded your current quota.",
                                                   type="insufficient_quota"))
            elif fault == "500":
                return error_response(*azure_error(500, "InternalServerError", "The server had an error."))
            elif fault == "disconnect":
                return DroppedResponse()  # type: ignore[return-value]  # an ASGI app that breaks off
        if CONTENT_FILTER_MARKER in user_text:
            status, err = azure_error(
                400, "content_filter",
                "The response was filtered due to the prompt triggering Azure OpenAI's content management policy.",
                innererror={"code": "ResponsibleAIPolicyViolation", "content_filter_result": {
                    **FILTER_RESULTS, "violence": {"filtered": True, "severity": "high"}}},
            )
            return error_response(status, err)
        return completion(state, deployment, body, messages, digest, stream_faults)

    def completion(state: EmulatorState, model: str, body: dict[str, Any], messages: list[dict[str, Any]],
                   digest: str, stream_faults: list[str]) -> Response:
        reasoning = 16 if REASONING_MODELS.match(model) else 0
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        choices = [choice_for(model, body, messages, digest, index, limit, reasoning)
                   for index in range(int(body.get("n") or 1))]
        prompt_tokens = count_message_tokens(messages)
        with state.lock:
            repeated = digest in state.seen_prompts
            state.seen_prompts.add(digest)
        cached = (prompt_tokens // 128) * 128 if repeated and prompt_tokens >= 1024 else 0
        completion_tokens = sum(choice.tokens for choice in choices) + reasoning
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        }
        completion_id = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        model_name = served_model(model, served)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(stream_chunks(completion_id, created, model_name, choices, usage,
                                                   include_usage, stream_faults), media_type="text/event-stream")
        return JSONResponse({
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model_name,
            "system_fingerprint": "fp_emulator",
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": FILTER_RESULTS}],
            "choices": [{"index": choice.index, "finish_reason": choice.finish, "logprobs": None,
                         "message": choice.message(), "content_filter_results": FILTER_RESULTS}
                        for choice in choices],
            "usage": usage,
        })

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def stats(request: Request) -> Response:
        return JSONResponse(state.stats())

    async def reset(request: Request) -> Response:
        state.reset()
        return JSONResponse({"status": "reset"})

    app = Starlette(routes=[
        Route("/openai/deployments/{deployment}/chat/completions", chat, methods=["POST"]),
        Route("/openai/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/health", health),
        Route("/_emulator/stats", stats),
        Route("/_emulator/reset", reset, methods=["POST"]),
    ])
    app.state.emulator = state
    return app


def active_fault(state: EmulatorState, spec: str, key: str) -> str | None:
    """The fault to apply now, or None once a `;times=N` fault has fired N times for this key."""
    fault, _, option = spec.strip().partition(";")
    if option.startswith("times="):
        counter = f"{fault}|{key}"
        with state.lock:
            state.fault_counts[counter] += 1
            if state.fault_counts[counter] > int(option[6:] or 0):
                return None
    return fault


class DroppedResponse:
    """Starts a response and breaks off: the server closes the connection, the client sees it dropped."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"1000")]})
        await send({"type": "http.response.body", "body": b'{"id": "chatcmpl-', "more_body": True})
        raise ConnectionAbortedError("emulator fault: disconnect")


@dataclass
class Choice:
    """One answer: content pieces (as streamed) or tool calls, and why it ended."""

    index: int
    pieces: list[str]
    finish: str
    tool_calls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return len(self.pieces) + sum(count_tokens(c["function"]["name"] + c["function"]["arguments"]) + 3
                                      for c in self.tool_calls)

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": None if self.tool_calls else "".join(self.pieces),
                                   "refusal": None}
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        return message


def choice_for(model: str, body: dict[str, Any], messages: list[dict[str, Any]], digest: str, index: int,
               limit: Any, reasoning: int) -> Choice:
    last = messages[-1] if isinstance(messages[-1], dict) else {}
    user_text = last_user_text(messages)
    tool = tool_to_call(body, user_text, str(last.get("role")))
    if tool is not None:
        return Choice(index, [], "tool_calls", [tool_call_for(tool, user_text, digest)])
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        schema = response_format["json_schema"]["schema"]
        text = json.dumps(ValueMaker(user_text, digest, schema).value(schema), ensure_ascii=False)
    elif last.get("role") == "tool":
        words = message_text(last.get("content")).split()
        text = f"[{model}] Tool result: {' '.join(words[:12])} #{digest}"
    else:
        text = reply_for(model, messages, response_format.get("type") == "json_object")
    if index and response_format.get("type") not in ("json_object", "json_schema"):
        text += f" (choice {index + 1})"
    pieces = split_tokens(text)
    finish = "stop"
    if isinstance(limit, int) and limit > 0 and len(pieces) + reasoning > limit:
        pieces = pieces[: max(limit - reasoning, 0)]
        finish = "length"
    return Choice(index, pieces, finish)


class StreamBroken(Exception):
    """The `stream-break` fault: the connection drops after the first chunks."""


async def stream_chunks(completion_id: str, created: int, model: str, choices: list[Choice],
                        usage: dict[str, Any], include_usage: bool, faults: list[str] | None = None) -> Any:
    faults = faults or []
    delays = [int(f.split("=", 1)[1]) / 1000 for f in faults if f.startswith("chunk-delay=")]
    sent_content = False
    async for chunk in chunks_of(completion_id, created, model, choices, usage, include_usage):
        if "stream-break" in faults and sent_content:
            raise StreamBroken("stream-break fault")
        for delay in delays:
            await asyncio.sleep(delay)
        yield chunk
        sent_content = sent_content or ('"content": "' in chunk and '"content": ""' not in chunk)


async def chunks_of(completion_id: str, created: int, model: str, choices: list[Choice],
                    usage: dict[str, Any], include_usage: bool) -> Any:
    def chunk(index: int, delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> str:
        choices = [] if extra.get("usage") else [{"index": index, "delta": delta, "finish_reason": finish_reason,
                                                   "logprobs": None, "content_filter_results": FILTER_RESULTS}]
        payload = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                   "system_fingerprint": "fp_emulator", "choices": choices, "usage": extra.get("usage")}
        return f"data: {json.dumps(payload)}\n\n"

    for choice in choices:
        yield chunk(choice.index, {"role": "assistant", "content": "" if not choice.tool_calls else None})
        for piece in choice.pieces:
            yield chunk(choice.index, {"content": piece})
        for position, call in enumerate(choice.tool_calls):
            yield chunk(choice.index, {"tool_calls": [{"index": position, "id": call["id"], "type": "function",
                                                       "function": {"name": call["function"]["name"],
                                                                    "arguments": ""}}]})
            for piece in split_tokens(call["function"]["arguments"]):
                yield chunk(choice.index, {"tool_calls": [{"index": position, "function": {"arguments": piece}}]})
        yield chunk(choice.index, {}, choice.finish)
    if include_usage:
        yield chunk(0, {}, usage=usage)
    yield "data: [DONE]\n\n"


def serve(host: str = "127.0.0.1", port: int = 8765, api_keys: set[str] | None = None,
          faults: list[str] | None = None, models: dict[str, str] | None = None) -> None:
    """Runs the emulator in the foreground until interrupted."""
    import uvicorn

    print(f"Azure OpenAI emulator on http://{host}:{port} (keys: {'any' if not api_keys else len(api_keys)})")
    uvicorn.run(create_app(api_keys, faults, models), host=host, port=port, log_level="warning", access_log=False)


@dataclass
class EmulatorHandle:
    port: int
    state: EmulatorState

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, Any]:
        return self.state.stats()


@contextmanager
def running_emulator(port: int = 0, api_keys: set[str] | None = None, faults: list[str] | None = None,
                     models: dict[str, str] | None = None) -> Iterator[EmulatorHandle]:
    """Starts the emulator on 127.0.0.1 in a background thread (port 0: a free port) and stops it on exit."""
    import uvicorn

    app = create_app(api_keys, faults, models)
    # IPPROTO_TCP explicitly: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose proto says TCP; without
    # it every response waits ~40 ms for a delayed ACK
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    config = uvicorn.Config(app, log_level="critical", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="emulator")
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the emulator did not start")
        time.sleep(0.01)
    try:
        yield EmulatorHandle(sock.getsockname()[1], app.state.emulator)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
