"""Group commit under concurrency: every 202 is stored, and when a batch's commit fails, every
request in it gets 503 and none of them is stored. The failure is real: a SQLite trigger
aborts the insert of one poisoned row, which fails the whole transaction it is in."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import httpx
import sqlalchemy as sa

from deskbell.storage.tables import requests
from deskbell.wiring import Runtime
from tests.conftest import running_app

URL = "/v1/assistance-requests"
POISON = """
CREATE TRIGGER poison BEFORE INSERT ON requests
WHEN json_extract(NEW.payload, '$.description') = 'poison'
BEGIN SELECT RAISE(ABORT, 'poisoned row'); END
"""


async def stored_ids(runtime: Runtime) -> set[str]:
    async with runtime.db.reader.connect() as conn:
        return set((await conn.execute(sa.select(requests.c.id))).scalars())


async def test_concurrent_ingest_shares_commits_and_loses_nothing(
    make_runtime: Callable[..., Runtime],
) -> None:
    runtime = make_runtime()
    async with runtime.db.writer.begin() as conn:
        await conn.execute(sa.text(POISON))
    async with running_app(runtime, start_workers=False) as client:

        async def post(description: str) -> httpx.Response:
            body = {"topic": "sales", "description": description}
            return await client.post(URL, json=body)

        descriptions = [f"ok-{i}" for i in range(200)]
        descriptions[100] = "poison"
        answers = await asyncio.gather(*(post(d) for d in descriptions))
        stored = await stored_ids(runtime)

    statuses = Counter(a.status_code for a in answers)
    accepted = {a.json()["id"] for a in answers if a.status_code == 202}
    refused = [a for a in answers if a.status_code != 202]
    assert set(statuses) <= {202, 503}
    assert answers[100].status_code == 503  # the poisoned request itself
    assert all(a.json()["error"]["code"] == "database_unavailable" for a in refused)
    assert stored == accepted  # every 202 is stored, and nothing else is
    assert len(accepted) == 200 - len(refused)
    assert len(refused) >= 1


async def test_group_commit_batches_concurrent_requests(
    make_runtime: Callable[..., Runtime],
) -> None:
    runtime = make_runtime()
    async with running_app(runtime, start_workers=False) as client:
        answers = await asyncio.gather(
            *(client.post(URL, json={"topic": "sales", "description": f"r{i}"}) for i in range(100))
        )
        batches, committed = runtime.ingest.batches, runtime.ingest.committed
    assert all(a.status_code == 202 for a in answers)
    assert committed == 100
    assert batches < 100  # requests shared transactions
