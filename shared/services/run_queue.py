"""The queue that carries runs to the `flow-runs` queue trigger: a small port and its Azure Storage adapter."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import Any


class RunQueue(ABC):
    configured = True  # False for the stand-in used when no queue is set up

    @abstractmethod
    async def send(self, message: dict[str, Any]) -> None:
        """Enqueues one run message: {run_id, tenant, flow, inputs, trigger}."""

    @abstractmethod
    async def ping(self) -> None:
        """Raises if the queue cannot be reached."""

    async def close(self) -> None:
        return None


class QueueNotConfigured(RuntimeError):
    pass


class UnconfiguredRunQueue(RunQueue):
    """No queue connection is set (local CLI use): async runs are refused with a clear message."""

    configured = False

    async def send(self, message: dict[str, Any]) -> None:
        raise QueueNotConfigured("no queue is configured: set TENANTFLOW_QUEUE_CONNECTION or AzureWebJobsStorage")

    async def ping(self) -> None:
        raise QueueNotConfigured("no queue is configured")


class StorageRunQueue(RunQueue):
    """Azure Storage queue (Azurite locally). Messages are base64 text, as the Functions queue trigger expects.

    `connection` is a connection string, or an account's queue URL used with `credential` (the app's one Azure
    credential, built in bootstrap). A client that failed is dropped and the next call builds a fresh one (and
    creates the queue again), so the queue recovers by itself after the storage service restarts."""

    def __init__(self, connection: str, queue_name: str, credential: Any = None) -> None:
        self.connection = connection
        self.queue_name = queue_name
        self.credential = credential
        self.client: Any = None

    async def queue(self) -> Any:
        if self.client is None:
            from azure.core.exceptions import ResourceExistsError
            from azure.storage.queue import TextBase64EncodePolicy
            from azure.storage.queue.aio import QueueClient

            # a send sits on an HTTP request's path: a few quick retries (the SDK default waits ~1 min), then fail
            options: dict[str, Any] = {"message_encode_policy": TextBase64EncodePolicy(), "retry_total": 2,
                                       "initial_backoff": 1, "increment_base": 2, "connection_timeout": 5}
            if self.connection.startswith("https://"):
                client = QueueClient(self.connection, self.queue_name, credential=self.credential, **options)
            else:
                client = QueueClient.from_connection_string(self.connection, self.queue_name, **options)
            try:
                await client.create_queue()
            except ResourceExistsError:
                pass
            except BaseException:
                await client.close()  # unreachable now: the next call builds a fresh client
                raise
            self.client = client
        return self.client

    async def send(self, message: dict[str, Any]) -> None:
        client = await self.queue()
        try:
            await client.send_message(json.dumps(message))
        except BaseException:
            await self.drop(client)
            raise

    async def ping(self) -> None:
        client = await self.queue()
        try:
            await client.get_queue_properties()
        except BaseException:
            await self.drop(client)
            raise

    async def drop(self, client: Any) -> None:
        """Forgets a client that failed (the queue may be gone after a restart of an in-memory emulator)."""
        if self.client is client:
            self.client = None
        try:
            await client.close()
        except Exception:  # closing a broken client must not hide the error that broke it
            pass

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None
