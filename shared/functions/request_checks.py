"""Pure checks of untrusted request parts, so that malformed input is a 4xx problem, never a 500.

Each check raises `RequestCheckError(status, field, message)`; the HTTP adapter turns it into problem details
(`status`, and `errors: [{field, message}]`). Nothing here does I/O or imports an SDK.

- `parse_json_body`: size, UTF-8, nesting depth (checked before parsing: the parser recurses), integers of more
  than 4,300 digits (Python refuses to convert them), NaN/Infinity and overflowing floats, and lone surrogates in
  keys or values (they cannot be encoded again, so every later write of the value would fail).
- `parse_webhook_signature`: `t=<1-12 ASCII digits>,v1=<64 hex>` — `str.isdigit` accepts `²`, `int()` of 5,000
  digits is slow; neither gets through.
- `check_flow_id`, `check_run_id`, `check_tenant_segment`: length and character set of path segments (no NUL, no
  separators), before anything reaches a store.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from shared.identifiers import FLOW_ID, TENANT_ID

MAX_BODY_BYTES = 1024 * 1024
MAX_JSON_DEPTH = 64
MAX_INT_DIGITS = 4300  # Python's default int <-> str conversion limit
STAMP = re.compile(r"[0-9]{1,12}", re.ASCII)
SIGNATURE = re.compile(r"[0-9a-fA-F]{64}", re.ASCII)
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}", re.ASCII)


@dataclass
class RequestCheckError(ValueError):
    status: int  # 400 malformed, 401 bad signature header, 404 impossible path segment, 413 too large
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def parse_json_body(raw: bytes, *, max_bytes: int = MAX_BODY_BYTES, max_depth: int = MAX_JSON_DEPTH,
                    field: str = "body") -> Any:
    """The JSON value of a request body (an empty body is None). Raises RequestCheckError."""
    if len(raw) > max_bytes:
        raise RequestCheckError(413, field, f"the body is over {max_bytes} bytes")
    if not raw.strip():
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestCheckError(400, field, f"not UTF-8 (byte {exc.start})") from None
    depth = json_depth(text)
    if depth > max_depth:
        raise RequestCheckError(400, field, f"JSON nested deeper than {max_depth} levels")
    try:
        value = json.loads(text, parse_int=bounded_int, parse_float=finite_float, parse_constant=refuse_constant)
    except RequestCheckError:
        raise
    except json.JSONDecodeError as exc:
        raise RequestCheckError(400, field, f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") \
            from None
    except (ValueError, RecursionError):
        raise RequestCheckError(400, field, "not valid JSON") from None
    check_strings(value, field)
    return value


def json_depth(text: str) -> int:
    """The deepest nesting of [ and { outside strings (a scan: safe on any input, linear time)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise RequestCheckError(400, "body", f"an integer has more than {MAX_INT_DIGITS} digits")
    return int(text)


def finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise RequestCheckError(400, "body", f"the number {text[:20]} is out of range")
    return value


def refuse_constant(name: str) -> Any:
    raise RequestCheckError(400, "body", f"{name} is not a JSON number")


def check_strings(value: Any, field: str) -> None:
    """Refuses lone surrogates (e.g. from "\\ud800") in any key or string value."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            strings: list[str] = [item]
        elif isinstance(item, dict):
            strings = list(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
            continue
        else:
            continue
        for text in strings:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise RequestCheckError(400, field, "a string holds a lone UTF-16 surrogate (\\ud800-\\udfff)") \
                    from None


@dataclass(frozen=True)
class WebhookSignature:
    stamp: str  # the digits as sent: they are part of the signed text
    seconds: int
    signatures: tuple[str, ...]  # lowercase hex; a sender may give several v1 during secret rotation


def parse_webhook_signature(header: str | None) -> WebhookSignature:
    """`t=<unix seconds>,v1=<hex HMAC-SHA256>[,v1=…]`. Raises RequestCheckError(401, x-tenantflow-signature, …)."""
    field = "x-tenantflow-signature"
    usage = "must be t=<unix seconds>,v1=<64 hex digits>"
    if not header or len(header) > 1024:
        raise RequestCheckError(401, field, usage)
    stamp: str | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, eq, value = part.strip().partition("=")
        if not eq:
            raise RequestCheckError(401, field, usage)
        if key == "t":
            if stamp is not None or not STAMP.fullmatch(value):
                raise RequestCheckError(401, field, "t must be 1-12 ASCII digits (unix seconds)")
            stamp = value
        elif key == "v1":
            if not SIGNATURE.fullmatch(value):
                raise RequestCheckError(401, field, "v1 must be 64 hex digits")
            signatures.append(value.lower())
    if stamp is None or not signatures:
        raise RequestCheckError(401, field, usage)
    return WebhookSignature(stamp, int(stamp), tuple(signatures))


def check_segment(value: str | None, pattern: re.Pattern[str], field: str, rule: str) -> str:
    if value is None or not pattern.fullmatch(value):
        raise RequestCheckError(404, field, f"not a {rule}")
    return value


def check_flow_id(value: str | None) -> str:
    return check_segment(value, FLOW_ID, "flow", "flow id (1-128 letters, digits and . _ -)")


def check_run_id(value: str | None) -> str:
    return check_segment(value, RUN_ID, "run_id", "run id (1-128 letters, digits and . _ : -)")


def check_tenant_segment(value: str | None) -> str:
    return check_segment(value, TENANT_ID, "tenant", "tenant id (2-63 lowercase letters, digits and -)")
