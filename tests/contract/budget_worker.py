"""One worker process of test_budget_processes: metered calls against one tenant's budget.

Usage: python -m tests.contract.budget_worker TENANT ATTEMPTS WORKER_ID (settings from TENANTFLOW_* env).
Prints the tokens it got settled, as JSON.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys

from shared.engine.ports import ChatRequest, ChatResult, Connection, ModelPort, StepFailure
from shared.engine.usage import TokenUsage
from shared.services.metering import MeteredModelPort, RunBook
from shared.services.prices import PriceBook
from shared.settings import Settings
from shared.storage.factory import open_stores


class InstantModel(ModelPort):
    async def chat(self, request: ChatRequest) -> ChatResult:
        completion = random.randint(1, request.max_completion_tokens or 1)
        usage = TokenUsage(7, completion, 7 + completion)
        return ChatResult("ok", "assistant", request.model, "stop", usage, "worker")


async def main(tenant: str, attempts: int, worker: str) -> None:
    settings = Settings.from_env()
    stores = await open_stores(settings)
    prices = PriceBook.load(settings.prices_file)
    granted = refused = 0
    try:
        for attempt in range(attempts):
            book = RunBook(stores.bookkeeping, tenant)
            port = MeteredModelPort(InstantModel(), book, prices, f"{worker}-{attempt}", "budget-test",
                                    lambda: stores.budgets.get_budget(tenant))
            request = ChatRequest(Connection("c"), "gpt-4o-mini", [{"role": "user", "content": "hi"}],
                                  max_completion_tokens=20, step_id="s")
            try:
                result = await port.chat(request)
                await book.commit()  # the charge
                granted += result.usage.total_tokens
            except StepFailure as exc:
                assert exc.code == "budget_exceeded", exc
                refused += 1
    finally:
        await stores.close()
    print(json.dumps({"granted": granted, "refused": refused}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
