"""Secret values at the bottom of the dependency graph (no imports from the project): `Secret`, which never
prints (str/repr/format/JSON all give ******), and the parsing of encryption keys."""

from __future__ import annotations

import base64
import binascii
import hashlib
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
