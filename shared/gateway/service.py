"""The gateway's chat completions: alias → the tenant's own credential and deployment, the tenant's budget reserved
before the call and its usage charged after it through the same bookkeeping as flow runs (shared.services.metering:
one atomic reserve, one atomic charge), the request body passed on unchanged except `model`, the answer passed
back as it came (a stream relayed chunk by chunk).

Each request is recorded as a run: trigger `gateway`, flow `gateway`, one step named by the alias, run id = the
request id the caller gets in `x-tenantflow-request-id`. A refused request (budget, unknown alias) writes nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from shared.connections.allowlist import EndpointAllowlist
from shared.engine.executor import credential_connection
from shared.engine.ports import Connection, CredentialSource, StepFailure
from shared.engine.usage import TokenUsage
from shared.gateway.errors import GatewayError, GatewayReply
from shared.gateway.upstream import Upstream, UpstreamAnswer, UpstreamUnreachable
from shared.secret import redact_text
from shared.services.metering import COMPLETION_BOUND, LEASE_TTL, RunBook, period_reset, prompt_bound
from shared.services.prices import PriceBook
from shared.storage.models import BookBatch, Budget, Lease, ModelAlias, RunRecord, StepRecord, UsageRecord, period_of
from shared.storage.ports import Bookkeeping, ModelAliasStore
from shared.telemetry import Telemetry, mark_error, telemetry

log = logging.getLogger(__name__)
GATEWAY = "gateway"  # the trigger and flow id of gateway requests in runs and the ledger
ALIAS_CACHE_SECONDS = 5.0  # an alias change reaches other instances within this bound
CREDENTIAL_STATUS = {"credential_not_found": 404, "tenant_suspended": 403, "tenant_not_found": 404}


@dataclass
class Call:
    """One gateway request on its way: what its charge needs once the answer is in."""

    tenant_id: str
    request_id: str
    alias: ModelAlias
    connection: Connection
    book: RunBook
    lease: Lease | None
    prompt_estimate: int
    started: float
    created_at: datetime
    span: Any  # the request's span (ended by its charge)
    recorded: bool = False


@dataclass
class Served:
    """What an answer showed of itself: its usage (if it reported it), its model, how much content it carried."""

    usage: dict[str, Any] | None = None
    model: str = ""
    content_chars: int = 0


class Gateway:
    def __init__(self, aliases: ModelAliasStore, credentials: CredentialSource, endpoints: EndpointAllowlist,
                 bookkeeping: Bookkeeping, budget: Callable[[str], Awaitable[Budget | None]], prices: PriceBook,
                 upstream: Upstream, now: Callable[[], datetime] | None = None,
                 tracing: Telemetry | None = None) -> None:
        self.aliases = aliases
        self.credentials = credentials
        self.endpoints = endpoints
        self.bookkeeping = bookkeeping
        self.budget = budget
        self.prices = prices
        self.upstream = upstream
        self.now = now or (lambda: datetime.now(UTC))
        self.tracing = tracing  # None: the process's (a no-op until telemetry is configured)
        self.alias_cache: dict[tuple[str, str], tuple[float, ModelAlias | None]] = {}
        self.draining: set[asyncio.Task[None]] = set()  # charges of streams whose client left

    # --- aliases ------------------------------------------------------------------------------------------------
    async def alias(self, tenant_id: str, name: str) -> ModelAlias:
        key = (tenant_id, name)
        cached = self.alias_cache.get(key)
        if cached is not None and cached[0] > time.monotonic():
            found = cached[1]
        else:
            found = await self.aliases.get(tenant_id, name)
            if len(self.alias_cache) > 10_000:
                self.alias_cache.clear()
            self.alias_cache[key] = (time.monotonic() + ALIAS_CACHE_SECONDS, found)
        if found is None:
            raise GatewayError(404, f"The model `{name[:100]}` does not exist or you do not have access to it.",
                               code="model_not_found", param="model")
        return found

    def forget_alias(self, tenant_id: str, name: str) -> None:
        self.alias_cache.pop((tenant_id, name), None)

    # --- chat completions ---------------------------------------------------------------------------------------
    async def chat(self, tenant_id: str, request_id: str, alias_name: str, body: dict[str, Any]) -> GatewayReply:
        """`body` is the caller's request; only `model` (and, for a stream, `stream_options.include_usage`) is
        changed before it goes upstream. One CLIENT span per request (GenAI attributes, never the messages),
        ended when the call is charged (for a stream: at its end)."""
        from opentelemetry.trace import SpanKind

        tracing = self.tracing or telemetry()
        span = tracing.tracer.start_span(f"chat {alias_name[:64]}", kind=SpanKind.CLIENT, attributes={
            "tenant.id": tenant_id, "tenantflow.request_id": request_id, "tenantflow.trigger": GATEWAY,
            "gen_ai.operation.name": "chat", "gen_ai.request.model": alias_name[:64]})
        holder: list[Call] = []
        try:
            return await self.forward(tenant_id, request_id, alias_name, body, span, holder)
        except BaseException as exc:
            if not (holder and holder[0].recorded):  # a charge ends its span; else it ends here
                mark_error(span, exc.code or str(exc.status) if isinstance(exc, GatewayError) else
                           type(exc).__name__)
                span.end()
            raise

    async def forward(self, tenant_id: str, request_id: str, alias_name: str, body: dict[str, Any], span: Any,
                      holder: list[Call]) -> GatewayReply:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise GatewayError(400, "'messages' must be a non-empty array", param="messages")
        alias = await self.alias(tenant_id, alias_name)
        connection = await self.connection(tenant_id, alias)
        stream = body.get("stream") is True
        wants_usage = False
        body["model"] = alias.deployment
        if stream:
            options = body.get("stream_options")
            wants_usage = isinstance(options, dict) and options.get("include_usage") is True
            body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        span.set_attributes({"gen_ai.system": "openai" if connection.kind == "openai" else "az.ai.openai",
                             "server.address": urlsplit(connection.endpoint).hostname or "",
                             "tenantflow.deployment": alias.deployment, "gen_ai.request.stream": stream})
        call = await self.reserve(tenant_id, request_id, alias, connection, body, messages, span)
        holder.append(call)
        try:
            answer = await self.upstream.post(connection, alias.deployment,
                                              json.dumps(body).encode(), stream)
        except UpstreamUnreachable as exc:
            await self.failed(call, "upstream_unreachable")
            raise GatewayError(502, redact_text(str(exc), secrets_of(connection)), "upstream_error",
                               "upstream_unreachable") from None
        except BaseException:
            await self.failed(call, "interrupted")
            raise
        if answer.status != 200:
            await self.failed(call, f"upstream_{answer.status}")
            return self.upstream_error(answer, connection)
        if answer.chunks is not None:
            return GatewayReply(200, b"", answer.content_type, answer.headers,
                                self.relay(call, answer, wants_usage))
        try:
            served = json.loads(answer.body)
        except ValueError:
            served = None
        if not isinstance(served, dict):
            served = {}
        state = Served(served.get("usage") if isinstance(served.get("usage"), dict) else None,
                            str(served.get("model") or ""))
        for choice in served.get("choices") or []:
            message = choice.get("message") if isinstance(choice, dict) else None
            if isinstance(message, dict):
                state.content_chars += len(str(message.get("content") or ""))
                state.content_chars += len(str(message.get("tool_calls") or ""))
        await self.charge_served(call, state)  # the usage it reports, else an estimate
        return GatewayReply(200, answer.body, answer.content_type, answer.headers)

    async def connection(self, tenant_id: str, alias: ModelAlias) -> Connection:
        try:
            fields = await self.credentials.load(tenant_id, alias.credential)
            return credential_connection(alias.credential, fields, self.endpoints)
        except StepFailure as exc:
            raise GatewayError(CREDENTIAL_STATUS.get(exc.code, 400), f"model {alias.alias}: {exc}",
                               code=exc.code, param="model") from None

    async def reserve(self, tenant_id: str, request_id: str, alias: ModelAlias, connection: Connection,
                      body: dict[str, Any], messages: list[Any], span: Any) -> Call:
        """Holds a lease on the tenant's budget (when it has limits) for the request's upper bound; 429
        `budget_exceeded` when used + reserved + it would pass a limit."""
        now = self.now()
        try:
            prompt = prompt_bound([m for m in messages if isinstance(m, dict)])
        except UnicodeEncodeError:
            raise GatewayError(400, "'messages' holds a lone UTF-16 surrogate (not valid Unicode text)",
                               param="messages", code="invalid_text") from None
        book = RunBook(self.bookkeeping, tenant_id)
        call = Call(tenant_id, request_id, alias, connection, book, None, prompt, time.perf_counter(), now, span)
        budget = await self.budget(tenant_id)
        if budget is None or (budget.monthly_tokens is None and budget.monthly_cost is None):
            return call
        completion = next((v for v in (body.get("max_completion_tokens"), body.get("max_tokens"))
                           if isinstance(v, int) and not isinstance(v, bool) and v > 0), COMPLETION_BOUND)
        n = body.get("n")
        choices = n if isinstance(n, int) and n > 0 else 1
        tokens = prompt + completion * choices
        price = self.prices.price(tenant_id, *self.price_names(alias, ""))
        cost = price.cost(TokenUsage(prompt, completion * choices, tokens)) if price is not None else Decimal(0)
        lease = Lease(tenant_id, f"{request_id}|{alias.alias}|0", request_id, period_of(now), tokens, cost,
                      now + LEASE_TTL)
        result = await book.commit(reserve=lease, limits=budget)
        if not result.reserved:
            reset = period_reset(lease.period)
            seconds = max(int((reset - now).total_seconds()) + 1, 1)
            raise GatewayError(429, f"tenant {tenant_id} is over its monthly budget for {lease.period}; it resets "
                               f"{reset.isoformat().replace('+00:00', 'Z')}", "insufficient_quota",
                               "budget_exceeded", headers={"retry-after": str(seconds)})
        call.lease = lease
        return call

    @staticmethod
    def price_names(alias: ModelAlias, served_model: str) -> tuple[str, ...]:
        """`price_as` overrides; else the model the upstream reports, then the deployment name."""
        return (alias.price_as,) if alias.price_as else (served_model, alias.deployment)

    async def charge(self, call: Call, usage: TokenUsage, served_model: str, estimated: bool = False,
                     error: str | None = None) -> None:
        """Records the call once: its usage record and its run (status, one step) in one transaction that also
        releases its lease."""
        if call.recorded:
            return
        call.recorded = True
        now = self.now()
        alias = call.alias
        cost = self.prices.cost(call.tenant_id, usage, *self.price_names(alias, served_model)) if error is None \
            else None
        step_usage: dict[str, Any] = usage.as_dict()
        run_usage: dict[str, Any] = {**step_usage, "cost": str(cost) if cost is not None else None,
                                     "model_calls": 0 if error else 1, "model": served_model or alias.deployment}
        if estimated:
            step_usage["estimated"] = run_usage["estimated"] = True
        if error:
            run_usage["error_code"] = error
        duration = round((time.perf_counter() - call.started) * 1000, 3)
        run = RunRecord(call.request_id, call.tenant_id, GATEWAY, "", GATEWAY, "failed" if error else "succeeded",
                        error=error, steps=[StepRecord(alias.alias, "chat_completion", "failed" if error else
                                                       "succeeded", duration, None if error else step_usage, error)],
                        usage=run_usage, created_at=call.created_at, started_at=call.created_at, finished_at=now)
        charges: tuple[UsageRecord, ...] = ()
        if error is None:
            charges = (UsageRecord(
                tenant_id=call.tenant_id, run_id=call.request_id, flow_id=GATEWAY, step_id=alias.alias, iteration=0,
                attempt=1, model=alias.deployment,  # the deployment, as for flow calls; priced by the served model
                endpoint_host=urlsplit(call.connection.endpoint).hostname or "", prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens, total_tokens=usage.total_tokens,
                cached_tokens=usage.cached_tokens, reasoning_tokens=usage.reasoning_tokens, cost=cost,
                recorded_at=now, estimated=estimated),)
        released = (call.lease.lease_id,) if call.lease is not None else ()
        try:
            await call.book.close(BookBatch(call.tenant_id, create_run=run, charges=charges, released=released))
        finally:
            self.end_span(call, usage, served_model, cost, error)

    def end_span(self, call: Call, usage: TokenUsage, served_model: str, cost: Decimal | None,
                 error: str | None) -> None:
        span = call.span
        if error is not None:
            mark_error(span, error)
        else:
            span.set_attributes({"gen_ai.response.model": served_model or call.alias.deployment,
                                 "gen_ai.usage.input_tokens": usage.prompt_tokens,
                                 "gen_ai.usage.output_tokens": usage.completion_tokens})
            (self.tracing or telemetry()).record_usage(call.tenant_id, call.alias.alias, usage, cost)
        span.end()

    async def failed(self, call: Call, code: str) -> None:
        await self.charge(call, TokenUsage(), "", error=code)

    def upstream_error(self, answer: UpstreamAnswer, connection: Connection) -> GatewayReply:
        """The upstream's error, in the OpenAI shape, with its status, retry-after and code; never the key."""
        try:
            parsed = json.loads(answer.body)
        except ValueError:
            parsed = None
        inner = parsed.get("error") if isinstance(parsed, dict) else None
        if not isinstance(inner, dict):
            inner = {}
        message = inner.get("message")
        if not isinstance(message, str):
            message = f"the model endpoint answered HTTP {answer.status}"
        error = GatewayError(answer.status, redact_text(message[:1000], secrets_of(connection)),
                             str(inner.get("type") or "upstream_error"),
                             str(inner["code"]) if inner.get("code") is not None else None,
                             str(inner["param"]) if isinstance(inner.get("param"), str) else None)
        return GatewayReply(answer.status, json.dumps(error.body()).encode(), "application/json", answer.headers)

    # --- streams ------------------------------------------------------------------------------------------------
    def relay(self, call: Call, answer: UpstreamAnswer, wants_usage: bool) -> AsyncIterator[bytes]:
        """The caller's stream: the upstream's server-sent events as they arrive (the usage chunk only if the caller
        asked for it). A task of its own reads the upstream and charges the call once, from the usage chunk, before
        `[DONE]` is passed on; if the caller goes away, it reads on to the usage chunk all the same (if that never
        comes, an estimate is charged, marked `estimated`)."""
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        task = asyncio.ensure_future(self.pump(call, answer, wants_usage, queue))
        self.draining.add(task)
        task.add_done_callback(self.draining.discard)
        return queued(queue)

    async def pump(self, call: Call, answer: UpstreamAnswer, wants_usage: bool,
                   queue: asyncio.Queue[bytes | None]) -> None:
        assert answer.chunks is not None
        state = Served()
        pending = b""
        try:
            async for data in answer.chunks:
                pending += data
                out = []
                while (end := pending.find(b"\n\n")) >= 0:
                    event, pending = pending[:end + 2], pending[end + 2:]
                    if observe(event, state) and not wants_usage:
                        continue
                    if event.startswith(b"data: [DONE]"):
                        await self.charge_served(call, state)  # in the ledger before the caller sees the end
                    out.append(event)
                if out:
                    queue.put_nowait(b"".join(out))
            if pending:
                queue.put_nowait(pending)
        except Exception as exc:  # the upstream broke off: the caller is told, what was served is charged (estimated)
            log.warning("gateway stream %s: the upstream broke off (%s)", call.request_id, type(exc).__name__)
            broke = GatewayError(502, f"the model endpoint's stream broke off ({type(exc).__name__})",
                                 "server_error", "upstream_stream_broken")
            queue.put_nowait(b"data: " + json.dumps(broke.body()).encode() + b"\n\n")
        finally:
            try:
                await answer.close()
                await self.charge_served(call, state)
            finally:
                queue.put_nowait(None)

    async def charge_served(self, call: Call, state: Served) -> None:
        """Charges what the upstream reported, or (no usage in its answer) an estimate marked `estimated`."""
        if state.usage is not None:
            await self.charge(call, TokenUsage.from_openai(state.usage), state.model)
            return
        completion = (state.content_chars + 3) // 4  # ~4 characters a token; the bound of the prompt itself
        await self.charge(call, TokenUsage(call.prompt_estimate, completion, call.prompt_estimate + completion),
                          state.model, estimated=True)

    async def close(self) -> None:
        """Waits for the streams still being read (the shared HTTP session is the model port's to close)."""
        if self.draining:
            await asyncio.gather(*self.draining, return_exceptions=True)


def observe(event: bytes, state: Served) -> bool:
    """Reads one server-sent event into `state` (model, usage, content length); True for the usage chunk."""
    usage_chunk = False
    for line in event.split(b"\n"):
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if not payload or payload == b"[DONE]":
            continue
        try:
            chunk = json.loads(payload)
        except ValueError:
            continue
        if not isinstance(chunk, dict):
            continue
        state.model = chunk.get("model") or state.model
        choices = chunk.get("choices") or []
        for choice in choices:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if isinstance(delta, dict):
                state.content_chars += len(delta.get("content") or "") + len(str(delta.get("tool_calls") or ""))
        if isinstance(chunk.get("usage"), dict):
            state.usage = chunk["usage"]
            usage_chunk = not choices
    return usage_chunk


def secrets_of(connection: Connection) -> tuple[str, ...]:
    return (connection.api_key.reveal(),) if connection.api_key is not None else ()


async def queued(queue: asyncio.Queue[bytes | None]) -> AsyncIterator[bytes]:
    while (item := await queue.get()) is not None:
        yield item
