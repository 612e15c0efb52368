"""Secrets at rest: AES-256-GCM, bound by associated data to the row they belong to.

Envelope (text, safe in any column): `v1.<kid>.<base64url(nonce ‖ ciphertext ‖ tag)>`, 96-bit random nonce.
The key id says which key of TENANTFLOW_ENCRYPTION_KEY made it, so old keys keep decrypting while
`credentials rotate-key` re-encrypts under the current (first) key. Associated data is
`<tenant id>\\x1f<credential name>` (or `<tenant id>\\x1fwebhook`): a blob copied into another row fails to open.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import re
import secrets
from pathlib import Path

from shared.secret import EncryptionKey

VERSION = "v1"
NONCE_BYTES = 12
KEY_BYTES = 32
TAG_BYTES = 16
KID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class DecryptionError(Exception):
    """A ciphertext cannot be opened: unknown key id, wrong key, tampering or a wrong row. Names no secret."""


def credential_aad(tenant_id: str, name: str) -> str:
    return f"{tenant_id}\x1f{name}"


def webhook_aad(tenant_id: str) -> str:
    return f"{tenant_id}\x1fwebhook"


def key_id_of(blob: str) -> str:
    """The id of the key that made `blob`; DecryptionError if it is not an envelope."""
    parts = blob.split(".", 2) if isinstance(blob, str) else []
    if len(parts) != 3 or parts[0] != VERSION or not KID.match(parts[1]):
        raise DecryptionError(f"not a Tenantflow ciphertext envelope (expected {VERSION}.<key id>.<data>)")
    return parts[1]


class SecretBox:
    """Encrypts under the first key, decrypts under any key it holds (found by the envelope's key id)."""

    def __init__(self, keys: tuple[EncryptionKey, ...]) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if not keys:
            raise ValueError("SecretBox needs at least one encryption key (TENANTFLOW_ENCRYPTION_KEY)")
        self.ciphers: dict[str, AESGCM] = {}
        for key in keys:
            if not KID.match(key.kid):
                raise ValueError(f"encryption key id {key.kid!r} must be 1-64 letters, digits, _ or -")
            if len(key.key) != KEY_BYTES:
                raise ValueError(f"encryption key {key.kid!r} must be {KEY_BYTES} bytes, got {len(key.key)}")
            if key.kid in self.ciphers:
                raise ValueError(f"duplicate encryption key id {key.kid!r}")
            self.ciphers[key.kid] = AESGCM(key.key)
        self.current_kid = keys[0].kid
        self.current = self.ciphers[self.current_kid]

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self.ciphers)

    def key_id_of(self, blob: str) -> str:
        return key_id_of(blob)

    def encrypt(self, plaintext: bytes, aad: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self.current.encrypt(nonce, plaintext, aad.encode())
        return f"{VERSION}.{self.current_kid}.{base64.urlsafe_b64encode(nonce + sealed).decode().rstrip('=')}"

    def decrypt(self, blob: str, aad: str) -> bytes:
        from cryptography.exceptions import InvalidTag

        kid = key_id_of(blob)
        cipher = self.ciphers.get(kid)
        if cipher is None:
            raise DecryptionError(f"encrypted with key {kid!r}, which TENANTFLOW_ENCRYPTION_KEY does not hold "
                                  f"(it holds {', '.join(self.ciphers)})")
        body = blob.split(".", 2)[2]
        try:
            raw = base64.b64decode(body + "=" * (-len(body) % 4), altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raise DecryptionError("ciphertext envelope is not valid base64url") from None
        if len(raw) < NONCE_BYTES + TAG_BYTES:
            raise DecryptionError("ciphertext envelope is truncated")
        try:
            return cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], aad.encode())
        except InvalidTag:
            raise DecryptionError(f"ciphertext does not open under key {kid!r} for this row (wrong key, tampered, "
                                  "or copied from another row)") from None


def dev_key_file_keys(path: Path) -> tuple[EncryptionKey, ...]:
    """Only for the embedded sqlite default without TENANTFLOW_ENCRYPTION_KEY: a random key kept in a local file
    (mode 0600), created on first use. Its key id is derived from the key the same way Settings derives one, so
    the file's content can later be moved into TENANTFLOW_ENCRYPTION_KEY as is and old rows keep opening."""
    from shared.secret import KeyFormatError, decode_key

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        # Write a temporary file, then link it into place: never a half-written key file, and when two processes
        # race, both end up reading the one that won.
        temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode() + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(temp, path)
        finally:
            temp.unlink(missing_ok=True)
    text = path.read_text().strip()
    try:
        key = decode_key(text)
    except KeyFormatError:
        raise ValueError(f"{path}: not a 32-byte base64url key; delete it only if no secret was stored with "
                         "it, or set TENANTFLOW_ENCRYPTION_KEY") from None
    if os.name == "posix" and path.stat().st_mode & 0o077:
        path.chmod(0o600)
    # "local" is the id the first version of this file used; kept second so such rows still open (and rotate).
    return EncryptionKey("k" + hashlib.sha256(key).hexdigest()[:8], key), EncryptionKey("local", key)
