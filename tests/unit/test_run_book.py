"""The run's book tells the store whether finishing the run has leases to release: a run that never sent a
`reserve` has none (the store may skip looking), and one that sent any (even a refused one) may hold some."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from shared.engine.ports import ChatRequest, Connection
from shared.secret import Secret
from shared.services.metering import BudgetExceeded, MeteredModelPort, RunBook
from shared.services.prices import PriceBook
from shared.settings import REPO_ROOT
from shared.storage.models import BookBatch, BookResult, Budget, RunRecord
from tests.fakes import FakeModel
from tests.memory.stores import InMemoryStores

PRICES = PriceBook.load(Path(REPO_ROOT / "shared/services/prices.yaml"))
CONNECTION = Connection("c", "azure_openai", "https://example.invalid", Secret("sk-0123456789abcdef"))


class Recording:
    def __init__(self, inner):
        self.inner, self.batches = inner, []

    async def commit(self, batch: BookBatch) -> BookResult:
        self.batches.append(batch)
        return await self.inner.commit(batch)


async def run_once(budget: Budget | None) -> tuple[Recording, InMemoryStores, str]:
    stores = InMemoryStores()
    recording = Recording(stores.bookkeeping)
    run = RunRecord("run-1", "acme", "f", "h", "http", "running")
    book = RunBook(recording, "acme", new_run=run)  # type: ignore[arg-type]

    async def limits():
        return budget

    metered = MeteredModelPort(FakeModel(), book, PRICES, "run-1", "f", limits)
    outcome = "succeeded"
    for step in ("a", "b"):
        try:
            await metered.chat(ChatRequest(CONNECTION, "gpt-4o-mini", [{"role": "user", "content": "x" * 40}],
                                           max_completion_tokens=10, step_id=step))
        except BudgetExceeded:
            outcome = "failed"
    run.status = outcome
    await book.commit(finish=run)
    return recording, stores, outcome


async def test_a_run_without_a_budget_finishes_saying_it_holds_no_lease():
    recording, stores, outcome = await run_once(None)
    assert outcome == "succeeded"
    assert all(b.reserve is None for b in recording.batches)
    assert recording.batches[-1].finish_run is not None and recording.batches[-1].leases_held is False
    assert len(await stores.usage.list_for_run("acme", "run-1")) == 2


async def test_a_run_that_reserved_even_refused_finishes_saying_it_may_hold_leases():
    # a lease is 68 tokens: the first call fits in 80, the second (after the first's charge) does not
    recording, stores, outcome = await run_once(Budget("acme", 80, None))
    assert outcome == "failed"
    assert [b.reserve is not None for b in recording.batches] == [True, True, False]
    assert [b.leases_held for b in recording.batches] == [True, True, True]
    assert await stores.bookkeeping.leases("acme") == []
    counters = await stores.budgets.counters("acme", recording.batches[0].reserve.period)
    assert counters.reserved_tokens == 0 and counters.reserved_cost == Decimal(0)
