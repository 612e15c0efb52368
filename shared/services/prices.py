"""Prices per model (Decimal per 1M tokens), from the versioned prices file, overridable per tenant."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from shared.engine.usage import TokenUsage

log = logging.getLogger(__name__)
MILLION = Decimal(1_000_000)
DATE_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$")
CURRENCY = re.compile(r"^[A-Z]{3}$")  # an ISO 4217 code


class PriceFileError(ValueError):
    pass


@dataclass(frozen=True)
class Price:
    input: Decimal
    cached_input: Decimal
    output: Decimal

    def cost(self, usage: TokenUsage) -> Decimal:
        cached = min(usage.cached_tokens, usage.prompt_tokens)
        uncached = usage.prompt_tokens - cached
        return (uncached * self.input + cached * self.cached_input + usage.completion_tokens * self.output) / MILLION


class PriceBook:
    def __init__(self, version: str, models: dict[str, Price], tenants: dict[str, dict[str, Price]],
                 currency: str = "USD") -> None:
        self.version = version
        self.models = models
        self.tenants = tenants
        self.currency = currency  # what every price (and so every recorded cost) is in

    @classmethod
    def load(cls, path: Path) -> PriceBook:
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise PriceFileError(f"{path}: cannot read prices: {exc}") from None
        models = parse_models(doc.get("models") or {}, f"{path}: models")
        tenants = {t: parse_models(m or {}, f"{path}: tenants.{t}") for t, m in (doc.get("tenants") or {}).items()}
        currency = doc.get("currency", "USD")
        if not isinstance(currency, str) or not CURRENCY.match(currency):
            raise PriceFileError(f"{path}: currency: must be a 3-letter ISO 4217 code such as USD, got {currency!r}")
        return cls(str(doc.get("version", "unversioned")), models, tenants, currency)

    def price(self, tenant_id: str, *names: str) -> Price | None:
        """The price of the first of `names` that is known: exactly, without a date suffix, or else by the longest
        price-file model that is a prefix of it up to a `-` (`gpt-4o-mini-2024-07-18` → gpt-4o-mini,
        `gpt-4o-2024-08-06` → gpt-4o). The tenant's own prices win over the file's."""
        tables = (self.tenants.get(tenant_id, {}), self.models)
        for name in names:
            if not name:
                continue
            for candidate in (name, DATE_SUFFIX.sub("", name)):
                for table in tables:
                    if candidate in table:
                        return table[candidate]
            for table in tables:
                prefixes = [known for known in table if name.startswith(known + "-")]
                if prefixes:
                    return table[max(prefixes, key=len)]
        return None

    def cost(self, tenant_id: str, usage: TokenUsage, *names: str) -> Decimal | None:
        """Cost of `usage`, or None (with a warning) when no price is known for any of `names`."""
        price = self.price(tenant_id, *names)
        if price is None:
            log.warning("no price for model %s; usage recorded with cost null", "/".join(n for n in names if n))
            return None
        return price.cost(usage)


def parse_models(raw: Any, where: str) -> dict[str, Price]:
    if not isinstance(raw, dict):
        raise PriceFileError(f"{where}: must be a mapping of model: prices")
    models = {}
    for name, entry in raw.items():
        try:
            models[str(name)] = Price(*(Decimal(str(entry[k])) for k in ("input", "cached_input", "output")))
        except (KeyError, TypeError, InvalidOperation):
            raise PriceFileError(f"{where}.{name}: needs decimal input, cached_input and output") from None
    return models
