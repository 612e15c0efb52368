"""Credential lookups: warm (cached) load, cold load from the embedded SQLite store, and one AES-GCM
encrypt+decrypt of a credential's secrets (goal: warm lookup ≤ 20 µs)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path

from shared.connections.allowlist import EndpointAllowlist
from shared.connections.encryption import SecretBox, credential_aad
from shared.secret import EncryptionKey, Secret
from shared.services.credentials import CredentialService
from shared.settings import Settings
from shared.storage.models import Tenant
from shared.storage.sqlite import open_sqlite_stores


def per_call_us(total_seconds: float, calls: int) -> float:
    return round(total_seconds / calls * 1e6, 2)


async def measure(warm_calls: int = 50_000, cold_calls: int = 500, crypto_calls: int = 20_000) -> dict[str, float]:
    box = SecretBox((EncryptionKey("bench", os.urandom(32)),))
    with tempfile.TemporaryDirectory() as folder:
        settings = dataclasses.replace(Settings.from_env({}), sqlite_path=Path(folder) / "bench.db")
        stores = await open_sqlite_stores(settings)
        try:
            credentials = CredentialService(stores.credentials, stores.tenants, box, EndpointAllowlist(), ttl=3600)
            tenants = [f"tenant-{i:03d}" for i in range(100)]
            for tenant in tenants:
                await stores.tenants.add(Tenant(tenant, tenant))
                await credentials.set(tenant, "foundry", "azure_openai", endpoint=f"https://{tenant}.openai.azure.com",
                                      api_key=Secret(os.urandom(24).hex()))
            for tenant in tenants:
                await credentials.load(tenant, "foundry")

            rounds = []
            for _ in range(5):
                started = time.perf_counter()
                for i in range(warm_calls):
                    await credentials.load(tenants[i % 100], "foundry")
                rounds.append(time.perf_counter() - started)
            warm = per_call_us(statistics.median(rounds), warm_calls)

            uncached = CredentialService(stores.credentials, stores.tenants, box, EndpointAllowlist(), ttl=0)
            started = time.perf_counter()
            for i in range(cold_calls):
                await uncached.load(tenants[i % 100], "foundry")
            cold = per_call_us(time.perf_counter() - started, cold_calls)
        finally:
            await stores.close()

    plaintext = b'{"api_key": "' + os.urandom(24).hex().encode() + b'"}'
    aad = credential_aad("tenant-000", "foundry")
    started = time.perf_counter()
    for _ in range(crypto_calls):
        box.decrypt(box.encrypt(plaintext, aad), aad)
    crypto = per_call_us(time.perf_counter() - started, crypto_calls)
    return {"credential_warm_lookup_us": warm, "credential_cold_load_sqlite_us": cold,
            "credential_encrypt_decrypt_us": crypto}


def run() -> dict[str, float]:
    return asyncio.run(measure())


if __name__ == "__main__":
    print(run())
