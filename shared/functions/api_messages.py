"""Framework-neutral HTTP request and response, shared by the Functions adapter and `tenantflow serve`.
Kept free of heavy imports: the HTTP blueprint imports it at start-up."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ApiRequest:
    """The mappings are read, never changed: an adapter may pass its framework's own (no copy per request)."""

    method: str
    path: str
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)  # looked up by lower-case name
    query: Mapping[str, str] = field(default_factory=dict)
    route: Mapping[str, str] = field(default_factory=dict)
    scheme: str = "http"  # of the URL the request was sent to (behind a proxy, see x-forwarded-proto)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class ApiResponse:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    stream: AsyncIterator[bytes] | None = None  # a body sent as it is produced (server-sent events), after `body`

    def __post_init__(self) -> None:
        # a JSON answer ends with a newline (curl output then ends its line), whichever helper built it
        if "json" in self.headers.get("content-type", "") and self.body and not self.body.endswith(b"\n"):
            self.body += b"\n"

    @classmethod
    def json(cls, status: int, value: Any, headers: dict[str, str] | None = None) -> ApiResponse:
        return cls(status, json.dumps(value, ensure_ascii=False).encode(),
                   {"content-type": "application/json", **(headers or {})})
