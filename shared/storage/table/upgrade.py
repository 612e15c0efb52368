"""`tenantflow db migrate` on Azure Table storage: carries wave 1's budget counters over.

Wave 1 kept each tenant's monthly counters in a table of their own (`<prefix>counters`, PartitionKey = tenant,
RowKey = period). They now live in the tenant's usage partition (RowKey `~counter~PERIOD`), where one entity group
transaction moves them with the ledger. Without this step an upgraded app would start every tenant's month at zero,
and budgets would let the month be spent twice.

For each old counter whose new row does not exist yet, the new row gets `used` = the ledger's records of that period
(the ledger is what is billed; wave 1 wrote counter and ledger separately, so they could drift: each difference is
reported) and nothing reserved (no wave 1 call outlives the upgrade). A new row that exists is never overwritten, so
the step can run any number of times. The old table is left as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from shared.storage.models import BudgetCounters, UsageRecord, period_of
from shared.storage.table.client import TableClients
from shared.storage.table.stores import counter_entity, query, usage_of

OLD_COUNTERS = "counters"


@dataclass
class CounterCarryOver:
    carried: int = 0  # new counter rows written
    kept: int = 0  # new rows already there (an earlier migrate, or runs since the upgrade)
    drifts: list[str] = field(default_factory=list)  # "tenant period: counter said N tokens, the ledger holds M"


async def carry_over_counters(tables: TableClients) -> CounterCarryOver | None:
    """None when there is no wave 1 counters table (a store created by this version)."""
    from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

    old = tables.service.get_table_client(tables.prefix + OLD_COUNTERS)
    try:
        counters = [entity async for entity in old.list_entities()]
    except ResourceNotFoundError:
        return None
    finally:
        await old.close()
    outcome = CounterCarryOver()
    ledgers: dict[str, list[UsageRecord]] = {}  # each tenant's ledger, read once for all its periods
    for entity in counters:
        partition, period = entity["PartitionKey"], entity["RowKey"]
        if partition not in ledgers:
            ledgers[partition] = [usage_of(e) for e in await query(
                tables["usage"], "PartitionKey eq @p and RowKey lt '~'", p=partition)]
        of_period = [r for r in ledgers[partition] if period_of(r.recorded_at) == period]
        tenant_id = of_period[0].tenant_id if of_period else partition
        tokens = sum(r.total_tokens for r in of_period)
        cost = sum((r.cost for r in of_period if r.cost is not None), Decimal(0))
        if int(entity.get("used_tokens", 0)) != tokens:
            outcome.drifts.append(f"{tenant_id} {period}: the counter said {int(entity.get('used_tokens', 0))} "
                                  f"tokens, the ledger holds {tokens}")
        try:
            await tables["usage"].create_entity(counter_entity(BudgetCounters(tenant_id, period, 0, tokens,
                                                                              Decimal(0), cost)))
            outcome.carried += 1
        except ResourceExistsError:
            outcome.kept += 1
    return outcome
