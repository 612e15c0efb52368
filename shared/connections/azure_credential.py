"""The app's one Azure credential: DefaultAzureCredential (the managed identity on Azure), built on first use.

Bootstrap builds one and injects it wherever an Azure SDK needs a token (the run queue and Table storage by
account URL, Key Vault references, keyless Entra model calls), so there is one token cache and one set of
HTTP connections to the identity endpoint. Nothing is imported or built until a token is asked for."""

from __future__ import annotations

from typing import Any


class AppAzureCredential:
    """An async token credential (get_token / get_token_info) that delegates to a lazily built
    DefaultAzureCredential."""

    def __init__(self) -> None:
        self.inner: Any = None

    def credential(self) -> Any:
        if self.inner is None:
            from azure.identity.aio import DefaultAzureCredential

            self.inner = DefaultAzureCredential()
        return self.inner

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        return await self.credential().get_token(*scopes, **kwargs)

    async def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        return await self.credential().get_token_info(*scopes, options=options)

    async def close(self) -> None:
        if self.inner is not None:
            await self.inner.close()
            self.inner = None
