"""RFC 9457 problem details: the one shape of every HTTP error answer, and the mapping from domain errors to it.
Nothing here answers a traceback or a secret."""

from __future__ import annotations

import json
from typing import Any

from shared.functions.api_messages import ApiResponse

PROBLEM_TYPE = "https://tenantflow.dev/problems/"
STORE_RETRY_AFTER = "5"


class ProblemDetails(Exception):
    """An error answer: raised by the HTTP adapter, turned into an application/problem+json response."""

    def __init__(self, status: int, title: str, detail: str, kind: str | None = None,
                 errors: list[dict[str, str]] | None = None, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail
        self.kind = kind or title.lower().replace(" ", "-")
        self.errors, self.headers, self.extra = errors, headers or {}, extra

    def response(self, instance: str) -> ApiResponse:
        body: dict[str, Any] = {"type": PROBLEM_TYPE + self.kind, "title": self.title, "status": self.status,
                                "detail": self.detail, "instance": instance, **self.extra}
        if self.errors:
            body["errors"] = self.errors
        return ApiResponse(self.status, json.dumps(body, ensure_ascii=False).encode(),
                           {"content-type": "application/problem+json", **self.headers})


def unauthenticated(detail: str = "missing or invalid API key (x-api-key)") -> ProblemDetails:
    return ProblemDetails(401, "Unauthenticated", detail, headers={"www-authenticate": 'ApiKey header="x-api-key"'})


def store_unavailable(reason: str) -> ProblemDetails:
    return ProblemDetails(503, "Store unavailable", f"{reason}; retry later",
                          headers={"retry-after": STORE_RETRY_AFTER})


def problem_for(exc: Exception) -> ProblemDetails | None:
    """The problem details of a domain error; None for an error no caller should see (a bug: answered 500)."""
    from shared.engine.errors import FlowError, InputError
    from shared.services.catalog import FlowNotFound
    from shared.services.runs import IdempotencyConflict, QueueUnavailable, RunNotCompleted, RunRefused
    from shared.services.usage import UsageQueryError
    from shared.settings import SettingsError
    from shared.storage.ports import StoreUnavailable

    if isinstance(exc, StoreUnavailable):
        return store_unavailable(str(exc))
    if isinstance(exc, RunNotCompleted):  # never a 200 for a run the app could not carry out
        if exc.cause == "store_unavailable":
            problem = store_unavailable(str(exc))
        else:
            problem = ProblemDetails(500, "Internal error",
                                     "the run was interrupted by an internal error; it has been logged")
        problem.extra["run_id"] = exc.run.run_id
        return problem
    if isinstance(exc, SettingsError):  # named by its variable only: the rest of the message may quote a value
        variable = str(exc).split(":", 1)[0]
        return ProblemDetails(503, "Not configured", f"the app setting {variable} is missing or malformed",
                              headers={"retry-after": "30"})
    if isinstance(exc, FlowNotFound):
        return ProblemDetails(404, "Flow not found", str(exc))
    if isinstance(exc, InputError):
        return ProblemDetails(422, "Invalid input", str(exc),
                              errors=[{"field": name, "message": message} for name, message in exc.errors.items()])
    if isinstance(exc, FlowError):
        return ProblemDetails(422, "Invalid flow", "the flow definition is invalid; run `tenantflow validate`",
                              errors=[{"field": p.field or "flow", "message": str(p)} for p in exc.problems])
    if isinstance(exc, RunRefused):
        if exc.code == "tenant_suspended":
            return ProblemDetails(403, "Tenant suspended", str(exc))
        return ProblemDetails(401, "Unauthenticated", str(exc))
    if isinstance(exc, IdempotencyConflict):
        return ProblemDetails(409, "Idempotency key reused", str(exc))
    if isinstance(exc, QueueUnavailable):
        retry = "retry with the same Idempotency-Key" if exc.kept else "retry later"
        return ProblemDetails(503, "Queue unavailable", f"{exc.reason}; {retry}", headers={"retry-after": "5"},
                              run_id=exc.run_id)
    if isinstance(exc, UsageQueryError):
        return ProblemDetails(422, "Invalid query", str(exc), errors=[{"field": exc.field, "message": str(exc)}])
    return None
