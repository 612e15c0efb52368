"""The queue that carries runs to the `flow-runs` queue trigger: a small port and its Azure Storage adapter."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import Any


class RunQueue(ABC):
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

    async def send(self, message: dict[str, Any]) -> None:
        raise QueueNotConfigured("no queue is configured: set TENANTFLOW_QUEUE_CONNECTION or AzureWebJobsStorage")

    async def ping(self) -> None:
        raise QueueNotConfigured("no queue is configured")


class StorageRunQueue(RunQueue):
    """Azure Storage queue (Azurite locally). Messages are base64 text, as the Functions queue trigger expects."""

    def __init__(self, connection: str, queue_name: str) -> None:
        self.connection = connection
        self.queue_name = queue_name
        self.client: Any = None
        self.credential: Any = None

    async def queue(self) -> Any:
        if self.client is None:
            from azure.core.exceptions import ResourceExistsError
            from azure.storage.queue import TextBase64EncodePolicy
            from azure.storage.queue.aio import QueueClient

            # a send sits on an HTTP request's path: a few quick retries (the SDK default waits ~1 min), then fail
            options: dict[str, Any] = {"message_encode_policy": TextBase64EncodePolicy(), "retry_total": 2,
                                       "initial_backoff": 1, "increment_base": 2, "connection_timeout": 5}
            if self.connection.startswith("https://"):
                from azure.identity.aio import DefaultAzureCredential

                self.credential = DefaultAzureCredential()
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
        await (await self.queue()).send_message(json.dumps(message))

    async def ping(self) -> None:
        await (await self.queue()).get_queue_properties()

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None
        if self.credential is not None:
            await self.credential.close()
