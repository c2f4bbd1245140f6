"""The handoff with real processes: an SLA step survives a SIGKILL of `deskbell serve` between
the accept and its time, and is sent once after the restart; `deskbell requests claim` and
`resolve` from a shell, with one-line errors. Nothing here mocks the store or the clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from deskbell.storage.engine import Database, connect
from deskbell.storage.tables import deliveries
from tests.fakes import wait_until_true
from tests.fakes.slack import FakeSlack
from tests.process import Deskbell, free_port, run_to_exit

SLA_SECONDS = 6  # long enough for a post and a kill to land before it, on a busy machine


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = connect(database_url)
    yield database
    await database.dispose()


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


def config(slack: FakeSlack) -> str:
    return f"""
channels:
  desk:
    type: console
  lead:
    type: slack
    webhook_url: {slack.url}
routes:
  - match: {{topic: sales}}
    to: [desk]
    escalate_after: {SLA_SECONDS}s
    escalate_to: [lead]
"""


def env(tmp_path: Path, database_url: str, text: str = "") -> dict[str, str]:
    path = tmp_path / "deskbell.yaml"
    if text:
        path.write_text(text)
    return {
        "DESKBELL_DATABASE_URL": database_url,
        "DESKBELL_CONFIG": str(path),
        "DESKBELL_POLL_SECONDS": "0.2",
    }


def serve(tmp_path: Path, settings: dict[str, str]) -> Deskbell:
    return Deskbell(("serve",), env=settings, workdir=tmp_path, port=free_port()).wait_ready()


async def escalations(db: Database, request_id: str) -> list[tuple[str, int]]:
    async with db.reader.connect() as conn:
        rows = await conn.execute(
            sa.select(deliveries.c.status, deliveries.c.attempts).where(
                deliveries.c.request_id == request_id, deliveries.c.kind == "escalation"
            )
        )
        return [(r.status, r.attempts) for r in rows]


async def test_escalation_survives_sigkill_and_is_sent_once(
    tmp_path: Path, database_url: str, db: Database, slack: FakeSlack
) -> None:
    settings = env(tmp_path, database_url, config(slack))
    server = serve(tmp_path, settings)
    answer = server.client.post(
        "/v1/assistance-requests", json={"topic": "sales", "description": "escalate me"}
    )
    assert answer.status_code == 202, answer.text
    request_id = answer.json()["id"]
    server.kill()
    server.terminate()  # closes its client; the process is gone already
    # The kill landed before the step was due: it is stored, not yet attempted.
    assert await escalations(db, request_id) == [("pending", 0)]
    assert slack.payloads == []

    restarted = serve(tmp_path, settings)
    try:

        async def sent() -> bool:
            return await escalations(db, request_id) == [("sent", 1)]

        await wait_until_true(sent, timeout=SLA_SECONDS + 30, what="the escalation step")
        assert len(slack.payloads) == 1
        assert "escalate me" in str(slack.payloads[0])
        assert "Unclaimed, escalation 1" in str(slack.payloads[0])
    finally:
        restarted.stop()


async def test_cli_claim_and_resolve(
    tmp_path: Path, database_url: str, db: Database, slack: FakeSlack
) -> None:
    settings = env(tmp_path, database_url, config(slack))
    server = serve(tmp_path, settings)
    try:
        answer = server.client.post(
            "/v1/assistance-requests", json={"topic": "sales", "description": "help"}
        )
        request_id = answer.json()["id"]
    finally:
        server.stop()

    def cli(*args: str) -> tuple[int, str]:
        return run_to_exit(("requests", *args), env=settings, workdir=tmp_path)

    code, out = cli("claim", request_id, "--by", "Ana")
    assert (code, out.split(" at ")[0]) == (0, "claimed by Ana"), out
    assert await escalations(db, request_id) == [("cancelled", 0)]
    code, out = cli("claim", request_id, "--by", "Bob")
    assert code == 2
    assert out.startswith("error: cannot claim: already claimed by Ana at "), out
    assert out.count("\n") == 1  # one line, no traceback
    code, out = cli("claim", request_id, "--by", "Ana")
    assert code == 0, out  # the holder's repeat
    code, out = cli("list", "--handoff", "claimed")
    assert code == 0, out
    assert request_id in out
    assert out.rstrip().endswith("claimed by Ana"), out
    code, out = cli("list", "--handoff", "waiting")
    assert (code, out) == (0, "")

    code, out = cli("resolve", request_id, "--by", "Lead")
    assert (code, out.split(" at ")[0]) == (0, "resolved by Lead"), out
    code, out = cli("resolve", request_id, "--by", "Bob")
    assert code == 2
    assert "already resolved by Lead" in out

    for args in (
        ("claim", "01900000-0000-7000-8000-000000000000", "--by", "Ana"),
        ("claim", "nope", "--by", "Ana"),
        ("claim", request_id, "--by", " "),
    ):
        code, out = cli(*args)
        assert code == 2, (args, out)
        assert out.startswith("error: "), out
        assert out.count("\n") == 1, out
    code, out = cli("claim", request_id)
    assert code == 2  # --by is required
