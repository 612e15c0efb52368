"""Composition root: builds the services from settings, filling each missing dependency with its production
default. Nothing touches the network at import time; stores open when `build_services` is awaited."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from shared.clock import Clock, SystemClock
from shared.connections.allowlist import EndpointAllowlist
from shared.connections.azure_credential import AppAzureCredential
from shared.connections.encryption import SecretBox, dev_key_file_keys
from shared.connections.keyvault import KeyVaultSecretResolver, SecretResolver
from shared.connections.openai_model import MAX_RETRY_WAIT, ClientCache, OpenAIModelPort
from shared.connections.outbound import OutboundSession
from shared.connections.static import load_settings_connections
from shared.engine.executor import FlowExecutor
from shared.engine.ports import Connection, ModelPort
from shared.engine.worst_case import ModelCallLimits
from shared.gateway.aliases import ModelAliasService
from shared.gateway.service import Gateway
from shared.gateway.upstream import Upstream
from shared.services.catalog import FlowCatalog
from shared.services.credentials import CredentialService
from shared.services.prices import PriceBook
from shared.services.queue_worker import QueueWorker
from shared.services.run_queue import RunQueue, StorageRunQueue, UnconfiguredRunQueue
from shared.services.runs import RunService
from shared.services.schedules import ScheduleService
from shared.services.tenants import TenantService
from shared.services.usage import UsageService
from shared.settings import Settings
from shared.storage.factory import open_stores
from shared.storage.ports import Stores
from shared.telemetry import TracedModelPort, telemetry_configured


@dataclass
class Services:
    settings: Settings
    stores: Stores
    catalog: FlowCatalog
    connections: dict[str, Connection]
    endpoints: EndpointAllowlist
    model: ModelPort
    prices: PriceBook
    box: SecretBox
    tenants: TenantService
    credentials: CredentialService
    runs: RunService
    queue: RunQueue
    queue_worker: QueueWorker
    schedules: ScheduleService
    usage: UsageService
    clock: Clock
    azure_credential: AppAzureCredential
    gateway: Gateway
    aliases: ModelAliasService

    async def close(self) -> None:
        for resource in (self.gateway, self.model, self.queue, self.credentials.resolver):
            closer = getattr(resource, "close", None)
            if closer is not None:
                await closer()
        await self.stores.close()
        await self.azure_credential.close()


def with_encryption_keys(settings: Settings) -> Settings:
    """The embedded sqlite default may run without TENANTFLOW_ENCRYPTION_KEY: it then uses a local key file
    beside the database. Every other store requires the setting (checked in Settings.from_env)."""
    if settings.encryption_keys:
        return settings
    keys = dev_key_file_keys(settings.sqlite_path.parent / "encryption.key")
    return dataclasses.replace(settings, encryption_keys=keys)


async def build_services(settings: Settings | None = None, *, stores: Stores | None = None,
                         queue: RunQueue | None = None, clock: Clock | None = None, model: ModelPort | None = None,
                         env: Mapping[str, str] | None = None,
                         secret_resolver: SecretResolver | None = None) -> Services:
    """Raises SettingsError for a bad setting and StoreUnavailable when the store cannot be opened; nothing is
    kept open then, so a caller may simply try again later."""
    settings = with_encryption_keys(settings or Settings.from_env())
    clock = clock or SystemClock()
    azure_credential = AppAzureCredential()  # one for the app; it builds DefaultAzureCredential on first use
    endpoints = EndpointAllowlist(settings.allowed_hosts, settings.allowed_host_suffixes)
    connections = load_settings_connections(settings, env)
    catalog = FlowCatalog(settings.flows_dir, connections)
    prices = PriceBook.load(settings.prices_file)
    box = SecretBox(settings.encryption_keys)
    stores = stores or await open_stores(settings, azure_credential)
    outbound = OutboundSession(endpoints)  # one pool for flow model calls and the gateway
    clients = ClientCache(outbound, token_credential=azure_credential)
    model = model or OpenAIModelPort(endpoints, clients, max_attempts=settings.model_max_attempts,
                                     timeout=settings.model_timeout_seconds)
    if telemetry_configured():  # a span and metrics per model call (the messages only with TENANTFLOW_CAPTURE_PROMPTS)
        model = TracedModelPort(model, prices=prices, capture_content=settings.capture_prompts)
    tenants = TenantService(stores.tenants, box, stores.replay, clock, key_cache_ttl=settings.api_key_cache_ttl)
    credentials = CredentialService(stores.credentials, stores.tenants, box, endpoints,
                                    resolver=secret_resolver or KeyVaultSecretResolver(
                                        azure_credential, allowed_vaults=settings.allowed_key_vaults),
                                    ttl=settings.credential_cache_ttl)
    if queue is None:
        queue = (StorageRunQueue(settings.queue_connection.reveal(), settings.run_queue, azure_credential)
                 if settings.queue_connection is not None else UnconfiguredRunQueue())

    def executor_factory(metered: ModelPort) -> FlowExecutor:
        return FlowExecutor(metered, credentials, endpoints, connections)

    runs = RunService(stores, catalog, model, executor_factory, prices, now=clock.now, queue=queue,
                      sync_limit_seconds=settings.sync_limit_seconds, call_limits=ModelCallLimits(
                          settings.model_timeout_seconds, settings.model_max_attempts, MAX_RETRY_WAIT),
                      run_deadline_seconds=settings.run_deadline_seconds)
    usage = UsageService(stores.usage_queries, stores.budgets)
    gateway = Gateway(stores.aliases, credentials, endpoints, stores.bookkeeping, runs.budget, prices,
                      Upstream(outbound, endpoints, settings.model_timeout_seconds, azure_credential), now=clock.now)
    aliases = ModelAliasService(stores.aliases, stores.tenants, stores.credentials, prices, gateway.forget_alias)
    return Services(settings, stores, catalog, connections, endpoints, model, prices, box, tenants, credentials, runs,
                    queue, QueueWorker(runs), ScheduleService(stores.schedules, catalog, runs, queue, clock), usage,
                    clock, azure_credential, gateway=gateway, aliases=aliases)
