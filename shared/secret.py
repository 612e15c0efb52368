"""Secret values at the bottom of the dependency graph (no imports from the project): `Secret`, which never
prints (str/repr/format/JSON all give ******), and the parsing of encryption keys."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

MASK = "******"

rendering_text: ContextVar[bool] = ContextVar("rendering_text", default=False)


class SecretExposureError(Exception):
    """A secret was about to be turned into text (a prompt, an output) — refused instead of masked."""


@contextmanager
def secrets_refuse_text() -> Iterator[None]:
    """Inside this block, turning a Secret into text raises SecretExposureError (used while rendering templates)."""
    token = rendering_text.set(True)
    try:
        yield
    finally:
        rendering_text.reset(token)


class Secret:
    """Wraps a secret string. Only `reveal()` gives the value back — call it where a client is built."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        if not isinstance(value, str):
            raise TypeError("Secret value must be a string")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        if rendering_text.get():
            raise SecretExposureError("a secret cannot be rendered into text")
        return MASK

    def __repr__(self) -> str:
        if rendering_text.get():
            raise SecretExposureError("a secret cannot be rendered into text")
        return f"Secret({MASK})"

    def __format__(self, spec: str) -> str:
        return str(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> Any:  # pickling would be a way out; refuse it
        raise TypeError("Secret values cannot be pickled")


def mask_secrets(value: Any) -> Any:
    """Returns a JSON-safe copy of `value` with every Secret replaced by the mask."""
    if isinstance(value, Secret):
        return MASK
    if isinstance(value, dict):
        return {k: mask_secrets(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_secrets(v) for v in value]
    return value


KEY_LIKE = re.compile(
    r"(?i:bearer|basic)\s+[^\s,;\"']+"  # Authorization header values
    r"|(?i:api[-_ ]?key|key|token|secret|password|signature|sig)(?P<sep>\s*[=:]\s*[\"']?)[^\s,;\"'&]{6,}"
    r"|\b(?:sk|pk|rk)-[A-Za-z0-9_-]{8,}"  # OpenAI-style keys
    r"|\beyJ[A-Za-z0-9_-]{8,}(?:\.[A-Za-z0-9_-]*){0,2}"  # JWTs
    r"|[A-Za-z0-9+/]{24,}={0,2}"  # base64-ish runs (Azure keys are 32 hex or 84 base62 characters)
    r"|[A-Za-z0-9_]{20,}"  # long unbroken tokens
)
ECHO_WINDOW = 8


def looks_random(token: str) -> bool:
    """A long run is a key if it mixes digits and letters (a word like "internationalization" is not)."""
    return any(c.isdigit() for c in token) and any(c.isalpha() for c in token)


def redact_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    """`text` (e.g. an upstream error message) without the given secret values, any 8-character piece of them, or
    anything that looks like a key: bearer/basic values, `key=…` pairs, `sk-…`, JWTs, long random tokens."""
    spans: list[tuple[int, int]] = []
    for secret in (s for s in secrets if len(s) >= ECHO_WINDOW):
        start = 0
        while start <= len(text) - ECHO_WINDOW:
            if text[start:start + ECHO_WINDOW] in secret:
                end = start + ECHO_WINDOW
                while end < len(text) and text[start:end + 1] in secret:
                    end += 1
                spans.append((start, end))
                start = end
            else:
                start += 1
    masked = {i for start, end in spans for i in range(start, end)}
    redacted = re.sub(r"(?:\x00)+", MASK, "".join("\x00" if i in masked else c for i, c in enumerate(text)))

    def mask(match: re.Match[str]) -> str:
        token = match.group(0)
        if match.group("sep") is not None:
            return token[:match.start("sep") - match.start()] + match.group("sep") + MASK
        if token[:1].isalnum() and not token.lower().startswith(("sk-", "pk-", "rk-", "eyj", "bearer", "basic")):
            return MASK if looks_random(token) else token
        return (token.split()[0] + " " + MASK) if token.lower().startswith(("bearer", "basic")) else MASK

    return KEY_LIKE.sub(mask, redacted)


class KeyFormatError(ValueError):
    """An encryption key is malformed; the message names TENANTFLOW_ENCRYPTION_KEY."""


@dataclass(frozen=True)
class EncryptionKey:
    kid: str
    key: bytes = field(repr=False)


def decode_key(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    try:
        raw = base64.b64decode(padded, altchars=b"-_") if ("-" in text or "_" in text) else base64.b64decode(padded)
    except (binascii.Error, ValueError):
        raise KeyFormatError("TENANTFLOW_ENCRYPTION_KEY: a key is not valid base64/base64url") from None
    if len(raw) != 32:
        raise KeyFormatError(f"TENANTFLOW_ENCRYPTION_KEY: a key must be 32 bytes, got {len(raw)}")
    return raw


def parse_encryption_keys(raw: str) -> tuple[EncryptionKey, ...]:
    """`KEY` or `kid:KEY`, comma-separated; the first is current. A key without an id gets one from its hash."""
    keys: list[EncryptionKey] = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        kid, _, key_text = part.rpartition(":")
        key = decode_key(key_text)
        kid = kid or "k" + hashlib.sha256(key).hexdigest()[:8]
        if any(k.kid == kid for k in keys):
            raise KeyFormatError(f"TENANTFLOW_ENCRYPTION_KEY: duplicate key id {kid!r}")
        keys.append(EncryptionKey(kid, key))
    if not keys:
        raise KeyFormatError("TENANTFLOW_ENCRYPTION_KEY: no key given")
    return tuple(keys)
