"""Secrets at rest: AES-256-GCM, bound by associated data to the row they belong to.

Envelope: `v1.<kid>.<base64url(nonce ‖ ciphertext ‖ tag)>`. The key id says which key of
TENANTFLOW_ENCRYPTION_KEY made it, so old keys keep decrypting while `credentials rotate-key` re-encrypts.
Associated data is `<tenant id>\\x1f<credential name>`: a blob copied into another tenant's row fails.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from shared.settings import EncryptionKey

NONCE_BYTES = 12


class DecryptionError(Exception):
    """A ciphertext cannot be opened: unknown key id, wrong key, tampering or a wrong row. Names no secret."""


def credential_aad(tenant_id: str, name: str) -> str:
    return f"{tenant_id}\x1f{name}"


class SecretBox:
    def __init__(self, keys: tuple[EncryptionKey, ...]) -> None:
        if not keys:
            raise ValueError("SecretBox needs at least one encryption key")
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self.ciphers = {k.kid: AESGCM(k.key) for k in keys}
        self.current_kid = keys[0].kid

    def encrypt(self, plaintext: bytes, aad: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self.ciphers[self.current_kid].encrypt(nonce, plaintext, aad.encode())
        return f"v1.{self.current_kid}.{base64.urlsafe_b64encode(nonce + sealed).decode().rstrip('=')}"

    def decrypt(self, blob: str, aad: str) -> bytes:
        from cryptography.exceptions import InvalidTag

        kid = key_id_of(blob)
        cipher = self.ciphers.get(kid)
        if cipher is None:
            raise DecryptionError(f"encrypted with key {kid!r}, which TENANTFLOW_ENCRYPTION_KEY does not hold")
        body = blob.split(".", 2)[2]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            return cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], aad.encode())
        except (InvalidTag, ValueError):
            raise DecryptionError("ciphertext does not open under its key for this row (wrong key, tampered, "
                                  "or copied from another row)") from None


def key_id_of(blob: str) -> str:
    parts = blob.split(".", 2)
    if len(parts) != 3 or parts[0] != "v1" or not parts[1]:
        raise DecryptionError("not a Tenantflow ciphertext envelope")
    return parts[1]


def dev_key_file_keys(path: Path) -> tuple[EncryptionKey, ...]:
    """The embedded sqlite default without TENANTFLOW_ENCRYPTION_KEY: a random local key file (mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())
    text = path.read_text().strip()
    key = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if len(key) != 32:
        raise ValueError(f"{path}: not a 32-byte key")
    return (EncryptionKey("local", key),)
