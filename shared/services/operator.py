"""What an operator does to a deployment — tenants, API keys, credentials, budgets, schedules, usage — as one typed
interface, `Operator`, with two implementations:

- `LocalOperator`: these services on this process's store. The CLI uses it by default, and the operator HTTP API
  (shared/functions/admin_http.py) answers every request with it.
- `RemoteOperator` (shared/operator_client.py): the operator HTTP API of a deployed app (`tenantflow --url`).

So a CLI command is written once, against `Operator`, and prints the same in both modes; and the API and the CLI
validate through the same service calls. Answers are plain JSON values in the operator API's response shapes (dates
as ISO 8601 strings), except a newly issued API key, which stays a `Secret` until it is shown. A refusal is
`OperationRefused`, naming the field it concerns and why: `missing` (HTTP 404), `exists` or `conflict` (409),
`invalid` (422).
"""

from __future__ import annotations

import builtins
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from shared.secret import Secret

if TYPE_CHECKING:
    from shared.bootstrap import Services
    from shared.storage.models import ApiKey, ModelAlias, Schedule, Tenant

Json = dict[str, Any]
Reason = Literal["missing", "exists", "conflict", "invalid"]
SCHEDULE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
CREDENTIAL_FIELDS = ("kind", "endpoint", "api_version", "auth", "api_key", "config", "secrets")


class OperationRefused(Exception):
    """An operator command that cannot be done: one line (never a secret), the field it concerns, and why."""

    def __init__(self, message: str, field: str, reason: Reason = "invalid") -> None:
        super().__init__(message)
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class IssuedKey:
    """A tenant API key, shown once: only its hash is stored."""

    key_id: str
    key: Secret


@dataclass(frozen=True)
class AddedTenant:
    tenant: Json  # {id, name, status, created_at}
    key: IssuedKey  # the tenant's first API key


@dataclass(frozen=True)
class CredentialInput:
    """The body of `PUT /api/admin/tenants/{t}/credentials/{name}`, and what `credentials set` reads from its flags:
    `kind`, `endpoint`, `api_version`, `auth` (`key` or `entra`), `api_key`, `config` (non-secret settings) and
    `secrets` (custom secrets)."""

    kind: str
    endpoint: str | None = None
    api_version: str | None = None
    auth: str = "key"
    api_key: Secret | None = None
    config: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, Secret] = field(default_factory=dict)

    @classmethod
    def from_json(cls, body: Any) -> CredentialInput:
        """Raises OperationRefused naming the first field of the wrong type or unknown."""
        if not isinstance(body, dict):
            raise OperationRefused("the body must be a JSON object with kind, endpoint, api_version, auth, api_key, "
                                   "config", "body")
        for name in body:
            if name not in CREDENTIAL_FIELDS:
                raise OperationRefused(f"unknown field {str(name)[:80]!r}", str(name)[:80])
        kind = body.get("kind")
        if not isinstance(kind, str):
            raise OperationRefused("kind is required: azure_openai, openai or custom", "kind")
        for name in ("endpoint", "api_version", "api_key"):
            if body.get(name) is not None and not isinstance(body[name], str):
                raise OperationRefused(f"{name} must be a string", name)
        auth = body.get("auth") or "key"
        if auth not in ("key", "entra"):
            raise OperationRefused("auth must be key or entra", "auth")
        config, secrets = body.get("config") or {}, body.get("secrets") or {}
        for name, mapping in (("config", config), ("secrets", secrets)):
            if not isinstance(mapping, dict):
                raise OperationRefused(f"{name} must be an object of strings", name)
            for key, value in mapping.items():
                if not isinstance(value, str):
                    raise OperationRefused(f"{name}.{key}: must be a string", f"{name}.{key}")
        return cls(kind=kind, endpoint=body.get("endpoint") or None, api_version=body.get("api_version") or None,
                   auth=auth, api_key=Secret(body["api_key"]) if body.get("api_key") is not None else None,
                   config=dict(config), secrets={k: Secret(v) for k, v in secrets.items()})

    def to_json(self) -> Json:
        """The request body, secrets revealed: only the remote client sends it, over HTTPS to the app."""
        body: Json = {"kind": self.kind, "endpoint": self.endpoint, "api_version": self.api_version,
                      "auth": self.auth, "config": self.config}
        if self.api_key is not None:
            body["api_key"] = self.api_key.reveal()
        if self.secrets:
            body["secrets"] = {name: value.reveal() for name, value in self.secrets.items()}
        return body


class Operator(ABC):
    """Every operator command, typed. Each method raises OperationRefused for what the caller can fix."""

    # --- tenants and API keys -----------------------------------------------------------------------------------
    @abstractmethod
    async def add_tenant(self, tenant_id: str, name: str | None = None) -> AddedTenant: ...

    @abstractmethod
    async def list_tenants(self) -> builtins.list[Json]: ...

    @abstractmethod
    async def suspend_tenant(self, tenant_id: str) -> Json: ...

    @abstractmethod
    async def activate_tenant(self, tenant_id: str) -> Json: ...

    @abstractmethod
    async def create_key(self, tenant_id: str) -> IssuedKey: ...

    @abstractmethod
    async def list_keys(self, tenant_id: str) -> builtins.list[Json]:
        """{key_id, status (active | revoked), created_at, revoked_at} — never the key."""

    @abstractmethod
    async def revoke_key(self, tenant_id: str, key_id: str) -> None: ...

    # --- credentials ----------------------------------------------------------------------------------------------
    @abstractmethod
    async def set_credential(self, tenant_id: str, name: str, credential: CredentialInput) -> Json:
        """The stored credential as `get_credential` shows it."""

    @abstractmethod
    async def get_credential(self, tenant_id: str, name: str) -> Json:
        """Everything but the secrets, which show as ******."""

    @abstractmethod
    async def list_credentials(self, tenant_id: str) -> builtins.list[Json]: ...

    @abstractmethod
    async def delete_credential(self, tenant_id: str, name: str) -> None: ...

    # --- budgets, schedules, usage --------------------------------------------------------------------------------
    @abstractmethod
    async def set_budget(self, tenant_id: str, monthly_tokens: int | None, monthly_cost: str | None) -> Json:
        """Replaces the tenant's monthly limits; answers the budget status (as `budget`)."""

    @abstractmethod
    async def budget(self, tenant_id: str) -> Json:
        """{tenant, period, reset, monthly_tokens, monthly_cost, used_tokens, reserved_tokens, used_cost,
        reserved_cost}"""

    @abstractmethod
    async def add_schedule(self, tenant_id: str, flow: str, cron: str, inputs: dict[str, str]) -> Json: ...

    @abstractmethod
    async def list_schedules(self, tenant_id: str | None = None) -> builtins.list[Json]: ...

    @abstractmethod
    async def remove_schedule(self, schedule_id: str) -> None: ...

    @abstractmethod
    async def usage(self, tenant_id: str | None, start: str | None, end: str | None, group_by: str) -> Json:
        """The usage summary of `usage --format json` and `GET /api/admin/usage`."""

    @abstractmethod
    async def set_model(self, tenant_id: str, alias: str, credential: str, deployment: str,
                        price_as: str | None) -> Json:
        """A gateway model alias, added or replaced: {alias, credential, deployment, price_as, updated_at}."""

    @abstractmethod
    async def get_model(self, tenant_id: str, alias: str) -> Json: ...

    @abstractmethod
    async def list_models(self, tenant_id: str) -> builtins.list[Json]: ...

    @abstractmethod
    async def remove_model(self, tenant_id: str, alias: str) -> None: ...

    async def close(self) -> None:
        """Releases what the operator holds (a store, an HTTP client)."""


def tenant_json(tenant: Tenant) -> Json:
    return {"id": tenant.id, "name": tenant.name, "status": tenant.status, "created_at": tenant.created_at.isoformat()}


def key_json(key: ApiKey) -> Json:
    return {"key_id": key.key_id, "status": "revoked" if key.revoked_at else "active",
            "created_at": key.created_at.isoformat(),
            "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None}


def model_json(alias: ModelAlias) -> Json:
    return {"alias": alias.alias, "credential": alias.credential, "deployment": alias.deployment,
            "price_as": alias.price_as, "updated_at": alias.updated_at.isoformat().replace("+00:00", "Z")}


def schedule_json(schedule: Schedule) -> Json:
    return {"id": schedule.id, "tenant": schedule.tenant_id, "flow": schedule.flow_id, "cron": schedule.cron,
            "inputs": schedule.inputs, "enabled": schedule.enabled, "created_at": schedule.created_at.isoformat()}


@contextmanager
def refusals() -> Iterator[None]:
    """Turns the services' refusals into OperationRefused, keeping their message and naming their field."""
    from shared.engine.errors import InputError
    from shared.gateway.aliases import AliasError
    from shared.services.catalog import FlowNotFound
    from shared.services.credentials import CredentialError
    from shared.services.runs import RunRefused
    from shared.services.schedules import ScheduleError
    from shared.services.tenants import TenantError, TenantExists, TenantNotFound
    from shared.services.usage import UsageQueryError

    try:
        yield
    except TenantNotFound as exc:
        raise OperationRefused(str(exc), exc.field, "missing") from None
    except TenantExists as exc:
        raise OperationRefused(str(exc), exc.field, "exists") from None
    except (TenantError, CredentialError, UsageQueryError) as exc:
        raise OperationRefused(str(exc), exc.field) from None
    except ScheduleError as exc:
        raise OperationRefused(str(exc), "cron") from None
    except AliasError as exc:
        raise OperationRefused(str(exc), exc.field, "missing" if exc.status == 404 else "invalid") from None
    except FlowNotFound as exc:
        raise OperationRefused(str(exc), "flow") from None
    except InputError as exc:
        raise OperationRefused(str(exc), next(iter(exc.errors), "inputs")) from None
    except RunRefused as exc:
        raise OperationRefused(str(exc), "tenant", "conflict" if exc.code == "tenant_suspended" else "missing") \
            from None


class LocalOperator(Operator):
    """The operator commands on this process's services (shared.bootstrap.Services)."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc

    async def require_tenant(self, tenant_id: str) -> Tenant:
        with refusals():
            return await self.svc.tenants.require(tenant_id)

    async def add_tenant(self, tenant_id: str, name: str | None = None) -> AddedTenant:
        with refusals():
            created = await self.svc.tenants.add(tenant_id, name)
        return AddedTenant(tenant_json(created.tenant), IssuedKey(created.key_id, created.api_key))

    async def list_tenants(self) -> builtins.list[Json]:
        return [tenant_json(tenant) for tenant in await self.svc.tenants.list()]

    async def suspend_tenant(self, tenant_id: str) -> Json:
        with refusals():
            await self.svc.tenants.suspend(tenant_id)
        self.svc.credentials.invalidate(tenant_id)
        return tenant_json(await self.require_tenant(tenant_id))

    async def activate_tenant(self, tenant_id: str) -> Json:
        with refusals():
            await self.svc.tenants.activate(tenant_id)
        return tenant_json(await self.require_tenant(tenant_id))

    async def create_key(self, tenant_id: str) -> IssuedKey:
        with refusals():
            key_id, key = await self.svc.tenants.create_key(tenant_id)
        return IssuedKey(key_id, key)

    async def list_keys(self, tenant_id: str) -> builtins.list[Json]:
        with refusals():
            return [key_json(key) for key in await self.svc.tenants.list_keys(tenant_id)]

    async def revoke_key(self, tenant_id: str, key_id: str) -> None:
        await self.require_tenant(tenant_id)
        if not await self.svc.tenants.revoke_key(tenant_id, key_id):
            raise OperationRefused(f"tenant {tenant_id} has no key {key_id[:80]}", "key_id", "missing")

    async def set_credential(self, tenant_id: str, name: str, credential: CredentialInput) -> Json:
        await self.require_tenant(tenant_id)
        with refusals():
            view = await self.svc.credentials.set(
                tenant_id, name, credential.kind, endpoint=credential.endpoint, api_version=credential.api_version,
                api_key=credential.api_key, entra=credential.auth == "entra", configs=credential.config,
                secrets=credential.secrets)
        return view.to_dict()

    async def get_credential(self, tenant_id: str, name: str) -> Json:
        from shared.services.credentials import CREDENTIAL_NAME

        await self.require_tenant(tenant_id)
        view = await self.svc.credentials.get(tenant_id, name) if CREDENTIAL_NAME.match(name) else None
        if view is None:
            raise OperationRefused(f"tenant {tenant_id}: no credential {name[:80]}", "name", "missing")
        return view.to_dict()

    async def list_credentials(self, tenant_id: str) -> builtins.list[Json]:
        await self.require_tenant(tenant_id)
        return [view.to_dict() for view in await self.svc.credentials.list(tenant_id)]

    async def delete_credential(self, tenant_id: str, name: str) -> None:
        from shared.services.credentials import CREDENTIAL_NAME

        await self.require_tenant(tenant_id)
        if not CREDENTIAL_NAME.match(name) or not await self.svc.credentials.delete(tenant_id, name):
            raise OperationRefused(f"tenant {tenant_id}: no credential {name[:80]}", "name", "missing")

    async def set_budget(self, tenant_id: str, monthly_tokens: int | None, monthly_cost: str | None) -> Json:
        await self.require_tenant(tenant_id)
        with refusals():
            await self.svc.usage.set_budget(tenant_id, monthly_tokens, monthly_cost)
        return await self.svc.usage.budget_status(tenant_id)

    async def budget(self, tenant_id: str) -> Json:
        await self.require_tenant(tenant_id)
        return await self.svc.usage.budget_status(tenant_id)

    async def add_schedule(self, tenant_id: str, flow: str, cron: str, inputs: dict[str, str]) -> Json:
        await self.require_tenant(tenant_id)
        with refusals():
            return schedule_json(await self.svc.schedules.add(tenant_id, flow, cron, inputs))

    async def list_schedules(self, tenant_id: str | None = None) -> builtins.list[Json]:
        if tenant_id is not None:
            await self.require_tenant(tenant_id)
        return [schedule_json(schedule) for schedule in await self.svc.schedules.list(tenant_id)]

    async def remove_schedule(self, schedule_id: str) -> None:
        if not SCHEDULE_ID.match(schedule_id) or not await self.svc.schedules.remove(schedule_id):
            raise OperationRefused(f"no schedule {schedule_id[:80]}", "schedule_id", "missing")

    async def usage(self, tenant_id: str | None, start: str | None, end: str | None, group_by: str) -> Json:
        from shared.services.usage import UsageQuery

        if tenant_id is not None:
            await self.require_tenant(tenant_id)
        with refusals():
            query = UsageQuery.parse(tenant_id, start, end, group_by)
        return await self.svc.usage.summary(query)

    async def set_model(self, tenant_id: str, alias: str, credential: str, deployment: str,
                        price_as: str | None) -> Json:
        await self.require_tenant(tenant_id)
        with refusals():
            return model_json(await self.svc.aliases.set(tenant_id, alias, credential=credential,
                                                         deployment=deployment, price_as=price_as))

    async def get_model(self, tenant_id: str, alias: str) -> Json:
        await self.require_tenant(tenant_id)
        found = await self.svc.stores.aliases.get(tenant_id, alias)
        if found is None:
            raise OperationRefused(f"tenant {tenant_id} has no model alias {alias[:64]!r}", "alias", "missing")
        return model_json(found)

    async def list_models(self, tenant_id: str) -> builtins.list[Json]:
        await self.require_tenant(tenant_id)
        with refusals():
            return [model_json(alias) for alias in await self.svc.aliases.list(tenant_id)]

    async def remove_model(self, tenant_id: str, alias: str) -> None:
        await self.require_tenant(tenant_id)
        with refusals():
            await self.svc.aliases.remove(tenant_id, alias)
