"""Managing a tenant's model aliases (CLI `tenantflow models …` and the operator routes): each names one of the
tenant's own credentials and a deployment behind it, and optionally the price-file model it is priced as."""

from __future__ import annotations

import builtins
import re
from collections.abc import Callable
from datetime import UTC, datetime

from shared.engine.model_names import MODEL_NAME_RULE, is_model_name
from shared.services.prices import PriceBook
from shared.storage.models import ModelAlias
from shared.storage.ports import CredentialStore, ModelAliasStore, TenantStore

ALIAS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
ALIAS_RULE = "1-64 letters, digits and . _ : -, starting with a letter or digit"


class AliasError(ValueError):
    """A refused alias command: `field` names what is wrong, `status` is 404 for what does not exist, else 422."""

    def __init__(self, message: str, field: str, status: int = 422) -> None:
        super().__init__(message)
        self.field = field
        self.status = status


class ModelAliasService:
    def __init__(self, store: ModelAliasStore, tenants: TenantStore, credentials: CredentialStore, prices: PriceBook,
                 forget: Callable[[str, str], None] = lambda tenant_id, alias: None) -> None:
        self.store = store
        self.tenants = tenants
        self.credentials = credentials
        self.prices = prices
        self.forget = forget  # drops an alias from the gateway's cache in this process

    async def require_tenant(self, tenant_id: str) -> None:
        if not isinstance(tenant_id, str) or not tenant_id or await self.tenants.get(tenant_id) is None:
            raise AliasError(f"unknown tenant {str(tenant_id)[:64]!r}", "tenant", 404)

    async def set(self, tenant_id: str, alias: str, *, credential: object, deployment: object,
                  price_as: object = None) -> ModelAlias:
        await self.require_tenant(tenant_id)
        if not isinstance(alias, str) or not ALIAS_NAME.fullmatch(alias):
            raise AliasError(f"alias: must be {ALIAS_RULE}", "alias")
        if not isinstance(credential, str) or not credential:
            raise AliasError("credential: the name of one of the tenant's credentials is required", "credential")
        if not isinstance(deployment, str) or not is_model_name(deployment):
            raise AliasError(f"deployment: must be a deployment name ({MODEL_NAME_RULE})", "deployment")
        if price_as is not None and (not isinstance(price_as, str) or self.prices.price(tenant_id, price_as) is None):
            raise AliasError(f"price_as: {str(price_as)[:64]!r} is not a model of the price file "
                             f"({', '.join(sorted(self.prices.models))})", "price_as")
        stored = await self.credentials.get(tenant_id, credential)
        if stored is None:
            raise AliasError(f"tenant {tenant_id} has no credential {credential[:64]!r} "
                             f"(see `tenantflow credentials list {tenant_id}`)", "credential", 404)
        if stored.kind not in ("azure_openai", "openai"):
            raise AliasError(f"credential {credential} is of kind {stored.kind}; an alias needs an azure_openai or "
                             "openai credential", "credential")
        model = ModelAlias(tenant_id, alias, credential, deployment, price_as, datetime.now(UTC))
        await self.store.put(model)
        self.forget(tenant_id, alias)
        return model

    async def list(self, tenant_id: str) -> builtins.list[ModelAlias]:
        await self.require_tenant(tenant_id)
        return await self.store.list(tenant_id)

    async def remove(self, tenant_id: str, alias: str) -> None:
        await self.require_tenant(tenant_id)
        if not await self.store.remove(tenant_id, alias):
            raise AliasError(f"tenant {tenant_id} has no model alias {str(alias)[:64]!r}", "alias", 404)
        self.forget(tenant_id, alias)
