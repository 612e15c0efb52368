"""SecretBox: AES-256-GCM envelopes bound to their row, key ids for rotation, and the local dev key file."""

from __future__ import annotations

import base64
import os
import re
import stat

import pytest

from shared.connections.encryption import (
    DecryptionError,
    SecretBox,
    credential_aad,
    dev_key_file_keys,
    key_id_of,
    webhook_aad,
)
from shared.secret import EncryptionKey, parse_encryption_keys

PLAINTEXT = b'{"api_key": "sk-very-secret-value"}'
OLD = EncryptionKey("old", bytes(range(32)))
NEW = EncryptionKey("new", bytes(range(32, 64)))


def test_round_trip_and_envelope_shape():
    box = SecretBox((NEW,))
    blob = box.encrypt(PLAINTEXT, credential_aad("acme", "foundry"))
    assert re.fullmatch(r"v1\.new\.[A-Za-z0-9_-]+", blob)
    assert box.decrypt(blob, credential_aad("acme", "foundry")) == PLAINTEXT
    assert key_id_of(blob) == box.key_id_of(blob) == box.current_kid == "new"
    raw = base64.urlsafe_b64decode(blob.split(".")[2] + "==")
    assert len(raw) == 12 + len(PLAINTEXT) + 16  # 96-bit nonce, ciphertext, 128-bit tag
    assert b"sk-very-secret-value" not in raw


def test_every_encryption_uses_a_fresh_nonce():
    box = SecretBox((NEW,))
    blobs = {box.encrypt(PLAINTEXT, "a") for _ in range(50)}
    assert len(blobs) == 50
    assert len({base64.urlsafe_b64decode(b.split(".")[2] + "==")[:12] for b in blobs}) == 50


@pytest.mark.parametrize("aad", [
    credential_aad("globex", "foundry"),  # another tenant's row
    credential_aad("acme", "other"),  # another credential of the same tenant
    webhook_aad("acme"),  # another kind of secret
    "acme" + "foundry",  # the separator matters
])
def test_a_blob_only_opens_for_its_own_row(aad):
    box = SecretBox((NEW,))
    blob = box.encrypt(PLAINTEXT, credential_aad("acme", "foundry"))
    with pytest.raises(DecryptionError) as caught:
        box.decrypt(blob, aad)
    assert "copied from another row" in str(caught.value)
    assert "secret-value" not in str(caught.value)


def test_old_keys_keep_decrypting_and_new_blobs_use_the_first_key():
    old_blob = SecretBox((OLD,)).encrypt(PLAINTEXT, "row")
    rotated = SecretBox((NEW, OLD))
    assert rotated.decrypt(old_blob, "row") == PLAINTEXT
    assert key_id_of(rotated.encrypt(PLAINTEXT, "row")) == "new"
    assert rotated.key_ids == ("new", "old")


def test_unknown_key_id_names_the_key_not_the_secret():
    blob = SecretBox((OLD,)).encrypt(PLAINTEXT, "row")
    with pytest.raises(DecryptionError, match="key 'old', which TENANTFLOW_ENCRYPTION_KEY does not hold"):
        SecretBox((NEW,)).decrypt(blob, "row")


def test_wrong_key_under_the_same_id_fails():
    blob = SecretBox((OLD,)).encrypt(PLAINTEXT, "row")
    impostor = SecretBox((EncryptionKey("old", os.urandom(32)),))
    with pytest.raises(DecryptionError, match="does not open under key 'old'"):
        impostor.decrypt(blob, "row")


@pytest.mark.parametrize("position", [0, 5, 11, 12, 20, -17, -1])
def test_any_flipped_byte_is_detected(position):
    box = SecretBox((NEW,))
    blob = box.encrypt(PLAINTEXT, "row")
    raw = bytearray(base64.urlsafe_b64decode(blob.split(".")[2] + "=="))
    raw[position] ^= 0x01
    tampered = "v1.new." + base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    with pytest.raises(DecryptionError):
        box.decrypt(tampered, "row")


@pytest.mark.parametrize("blob, message", [
    ("", "not a Tenantflow ciphertext envelope"),
    ("sk-plaintext-key", "not a Tenantflow ciphertext envelope"),
    ("v2.new.AAAA", "not a Tenantflow ciphertext envelope"),
    ("v1..AAAA", "not a Tenantflow ciphertext envelope"),
    ("v1.new.AAAA", "truncated"),
    ("v1.new.@@@@", "not valid base64url"),
])
def test_malformed_envelopes_are_refused_clearly(blob, message):
    with pytest.raises(DecryptionError, match=message):
        SecretBox((NEW,)).decrypt(blob, "row")


@pytest.mark.parametrize("keys, message", [
    ((), "at least one encryption key"),
    ((EncryptionKey("a.b", bytes(32)),), "key id"),
    ((EncryptionKey("short", bytes(16)),), "must be 32 bytes"),
    ((NEW, EncryptionKey("new", bytes(32))), "duplicate"),
])
def test_bad_key_sets_are_refused(keys, message):
    with pytest.raises(ValueError, match=message):
        SecretBox(keys)


def test_dev_key_file_is_created_private_and_reused(tmp_path):
    path = tmp_path / "state" / "encryption.key"
    keys = dev_key_file_keys(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert dev_key_file_keys(path) == keys
    assert len(keys[0].key) == 32
    assert not [p for p in path.parent.iterdir() if p != path]  # no temporary file left behind
    # Moving the file's content into TENANTFLOW_ENCRYPTION_KEY keeps the same key id, so old rows still open.
    assert parse_encryption_keys(path.read_text().strip())[0] == keys[0]
    blob = SecretBox(keys).encrypt(PLAINTEXT, "row")
    assert SecretBox(parse_encryption_keys(path.read_text().strip())).decrypt(blob, "row") == PLAINTEXT


def test_dev_key_file_reads_rows_written_under_the_legacy_local_id(tmp_path):
    keys = dev_key_file_keys(tmp_path / "encryption.key")
    legacy = SecretBox((EncryptionKey("local", keys[0].key),)).encrypt(PLAINTEXT, "row")
    assert SecretBox(keys).decrypt(legacy, "row") == PLAINTEXT


def test_dev_key_file_tightens_loose_permissions_and_refuses_garbage(tmp_path):
    path = tmp_path / "encryption.key"
    path.write_text(base64.urlsafe_b64encode(os.urandom(32)).decode())
    path.chmod(0o644)
    dev_key_file_keys(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("not a key")
    with pytest.raises(ValueError, match="not a 32-byte base64url key"):
        dev_key_file_keys(path)
