"""The handoff (SPEC §9) on real databases: one winner among concurrent claims, resolve,
escalation steps committed at accept and sent by the worker when due (an injected clock),
stopped by a claim, and the bot's events queued in the claim's transaction."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from deskbell import handoff
from deskbell.errors import NotFound
from deskbell.models import AssistanceRequestIn, DeliveryStatus, HandoffState, StoredRequest
from deskbell.settings import Settings
from deskbell.storage.tables import deliveries
from deskbell.wiring import Runtime, build_runtime
from tests.fakes import wait_until_true

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

ESCALATING = """
channels:
  desk:
    type: console
  lead:
    type: console
  manager:
    type: console
routes:
  - match: {topic: sales}
    to: [desk]
    escalate_after: [10m, 30m]
    escalate_to: [lead, [manager, lead]]
  - match: {topic: pricing}
    to: [desk]
default: reject
"""


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, at: datetime = T0) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def console() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
async def runtime(
    database_url: str, write_config: Callable[[str], Path], clock: FakeClock, console: io.StringIO
) -> AsyncIterator[Runtime]:
    settings = Settings(
        database_url=database_url, config=write_config(ESCALATING), workers=4, poll_seconds=0.05
    )
    rt = build_runtime(settings, clock=clock, console=console)
    yield rt
    await rt.aclose()


async def accept(
    rt: Runtime, topic: str = "sales", *, callback_url: str | None = None, keyed: bool = False
) -> str:
    payload = AssistanceRequestIn(topic=topic, description="help")
    receipt, _ = await rt.accept(
        payload,
        rt.active.router.targets(payload),
        idempotency_key=f"k-{topic}-{callback_url}" if keyed else None,
        callback_url=callback_url,
        source="bot" if callback_url else None,
    )
    return receipt.id


async def stored(rt: Runtime, request_id: str) -> StoredRequest:
    found = await rt.store.reads.get_request(request_id)
    assert found is not None
    return found


@pytest.mark.parametrize("keyed", [False, True], ids=["grouped", "keyed"])
async def test_escalation_steps_are_committed_with_the_request(
    runtime: Runtime, keyed: bool
) -> None:
    request_id = await accept(runtime, keyed=keyed)
    request = await stored(runtime, request_id)
    assert request.handoff is not None
    assert request.handoff.state == "waiting"
    steps = [(e.step, e.channel, e.status, e.due_at) for e in request.handoff.escalations]
    assert sorted(steps) == [
        (1, "lead", DeliveryStatus.PENDING, T0 + timedelta(minutes=10)),
        (2, "lead", DeliveryStatus.PENDING, T0 + timedelta(minutes=30)),
        (2, "manager", DeliveryStatus.PENDING, T0 + timedelta(minutes=30)),
    ]
    if keyed:  # a repeat answers the first 202: the route's notifications only
        payload = AssistanceRequestIn(topic="sales", description="help")
        repeat, created = await runtime.accept(
            payload,
            runtime.active.router.targets(payload),
            idempotency_key="k-sales-None",
        )
        assert (repeat.id, created) == (request_id, False)
        assert [d.channel for d in repeat.deliveries] == ["desk"]
    # The 202's deliveries are the route's notifications only.
    assert [d.channel for d in request.deliveries if d.kind is None] == ["desk"]
    # A route without escalation stores none.
    plain = await stored(runtime, await accept(runtime, "pricing"))
    assert plain.handoff is not None
    assert plain.handoff.escalations == ()
    assert [d.channel for d in plain.deliveries] == ["desk"]


async def test_concurrent_claims_have_exactly_one_winner(runtime: Runtime) -> None:
    request_id = await accept(runtime)
    names = [f"agent-{n}" for n in range(50)]
    outcomes = await asyncio.gather(
        *(handoff.claim(runtime, request_id, by=name, via="api") for name in names)
    )
    winners = [o for o in outcomes if o.won]
    assert len(winners) == 1
    winner = winners[0].claimed_by
    assert winner in names
    # Every loser is told who won, and when.
    assert {(o.state, o.claimed_by, o.claimed_at) for o in outcomes} == {("claimed", winner, T0)}
    request = await stored(runtime, request_id)
    assert request.handoff is not None
    assert (request.handoff.state, request.handoff.claimed_by) == ("claimed", winner)
    # The winner's claim cancelled every escalation step, in the same transaction.
    assert {e.status for e in request.handoff.escalations} == {DeliveryStatus.CANCELLED}
    # A repeat by the holder is a win again (a double click); nothing changes.
    again = await handoff.claim(runtime, request_id, by=winner or "", via="slack")
    assert (again.won, again.via) == (True, "api")


async def test_unknown_request_and_bad_names(runtime: Runtime) -> None:
    with pytest.raises(NotFound):
        await handoff.claim(runtime, "01900000-0000-7000-8000-000000000000", by="ana", via="api")
    with pytest.raises(NotFound):
        await handoff.resolve(runtime, "not-an-id", by="ana", via="api")
    request_id = await accept(runtime)
    for bad in ("", "   ", "a" * 129, "ana\nbob", "ana\x00"):
        with pytest.raises(ValueError, match="characters"):
            await handoff.claim(runtime, request_id, by=bad, via="api")
    with pytest.raises(ValueError, match="via"):
        await handoff.claim(runtime, request_id, by="ana", via="fax")
    assert (await handoff.claim(runtime, request_id, by="  ana  ", via="api")).claimed_by == "ana"


async def test_resolve_from_claimed_or_waiting_and_final(
    runtime: Runtime, clock: FakeClock
) -> None:
    claimed = await accept(runtime)
    assert (await handoff.claim(runtime, claimed, by="ana", via="api")).won
    clock.at = T0 + timedelta(minutes=5)
    # A colleague may close a request someone else claimed; the claim is kept.
    done = await handoff.resolve(runtime, claimed, by="lead", via="api")
    assert (done.won, done.state, done.claimed_by, done.resolved_by) == (
        True,
        "resolved",
        "ana",
        "lead",
    )
    assert done.resolved_at == T0 + timedelta(minutes=5)
    # Resolved is final: a claim or another person's resolve is told who resolved it.
    late = await handoff.claim(runtime, claimed, by="bob", via="slack")
    assert (late.won, late.state, late.resolved_by) == (False, "resolved", "lead")
    assert not (await handoff.resolve(runtime, claimed, by="bob", via="api")).won
    assert (await handoff.resolve(runtime, claimed, by="lead", via="api")).won  # a repeat

    waiting = await accept(runtime)
    skipped = await handoff.resolve(runtime, waiting, by="bot-owner", via="cli")
    assert (skipped.won, skipped.claimed_by, skipped.via) == (True, None, "cli")
    request = await stored(runtime, waiting)
    assert request.handoff is not None
    assert {e.status for e in request.handoff.escalations} == {DeliveryStatus.CANCELLED}


async def test_filter_by_handoff_state(runtime: Runtime) -> None:
    ids = [await accept(runtime) for _ in range(4)]
    await handoff.claim(runtime, ids[1], by="ana", via="api")
    await handoff.resolve(runtime, ids[2], by="ana", via="api")
    reads = runtime.store.reads
    for state, expected in (
        ("waiting", [ids[3], ids[0]]),
        ("claimed", [ids[1]]),
        ("resolved", [ids[2]]),
    ):
        page, _ = await reads.list_requests(handoff=HandoffState(state))
        assert [r.id for r in page] == expected, state
    page, _ = await reads.list_requests(handoff=HandoffState.WAITING, status=DeliveryStatus.PENDING)
    assert [r.id for r in page] == [ids[3], ids[0]]
    assert await runtime.store.handoff.unclaimed() == 2


async def _escalation_rows(rt: Runtime, request_id: str) -> list[tuple[int, str, str, int]]:
    async with rt.db.reader.connect() as conn:
        rows = await conn.execute(
            sa.select(
                deliveries.c.step, deliveries.c.channel, deliveries.c.status, deliveries.c.attempts
            )
            .where(deliveries.c.request_id == request_id, deliveries.c.kind == "escalation")
            .order_by(deliveries.c.step, deliveries.c.channel)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


async def test_escalation_is_sent_when_due_and_a_claim_stops_the_rest(
    runtime: Runtime, clock: FakeClock, console: io.StringIO
) -> None:
    runtime.start_workers()
    left = await accept(runtime)  # nobody claims this one
    taken = await accept(runtime)  # claimed between step 1 and step 2

    async def notified() -> bool:
        requests = [await stored(runtime, r) for r in (left, taken)]
        routed = [d for r in requests for d in r.deliveries if d.kind is None]
        return all(d.status is DeliveryStatus.SENT for d in routed)

    await wait_until_true(notified, what="the route's notifications")
    assert "Unclaimed" not in console.getvalue()
    assert {r[2] for r in await _escalation_rows(runtime, left)} == {"pending"}

    clock.at = T0 + timedelta(minutes=10, seconds=1)
    runtime.wake_workers()

    async def step_sent(request_id: str, step: int) -> bool:
        rows = await _escalation_rows(runtime, request_id)
        return all(r[2] == "sent" for r in rows if r[0] == step)

    await wait_until_true(lambda: step_sent(left, 1), what="step 1 of the first request")
    await wait_until_true(lambda: step_sent(taken, 1), what="step 1 of the second request")
    assert (await handoff.claim(runtime, taken, by="ana", via="api")).won
    # The escalation's message says what it is.
    assert console.getvalue().count("Unclaimed, escalation 1: Assistance requested: sales") == 2

    clock.at = T0 + timedelta(minutes=30, seconds=1)
    runtime.wake_workers()
    await wait_until_true(lambda: step_sent(left, 2), what="step 2 of the unclaimed request")
    # Each step went once; the claimed request's step 2 was cancelled, never attempted.
    assert await _escalation_rows(runtime, left) == [
        (1, "lead", "sent", 1),
        (2, "lead", "sent", 1),
        (2, "manager", "sent", 1),
    ]
    assert await _escalation_rows(runtime, taken) == [
        (1, "lead", "sent", 1),
        (2, "lead", "cancelled", 0),
        (2, "manager", "cancelled", 0),
    ]
    request = await stored(runtime, taken)
    assert request.handoff is not None
    shown = [(e.step, e.status.value, e.sent_at is not None) for e in request.handoff.escalations]
    assert shown == [(1, "sent", True), (2, "cancelled", False), (2, "cancelled", False)]
    # Each step shows when it was due, sent or not.
    due = [T0 + timedelta(minutes=10), T0 + timedelta(minutes=30), T0 + timedelta(minutes=30)]
    assert [e.due_at for e in request.handoff.escalations] == due


async def test_claim_and_resolve_queue_events_only_with_a_callback(runtime: Runtime) -> None:
    with_callback = await accept(runtime, callback_url="https://bot.example.com/hook")
    without = await accept(runtime)
    for request_id in (with_callback, without):
        await handoff.claim(runtime, request_id, by="ana", via="slack")
        await handoff.resolve(runtime, request_id, by="ana", via="slack")
    async with runtime.db.reader.connect() as conn:
        rows = (
            await conn.execute(
                sa.select(deliveries.c.request_id, deliveries.c.event_type, deliveries.c.event_body)
                .where(deliveries.c.kind == "event")
                .order_by(deliveries.c.id)
            )
        ).all()
    assert [(r.request_id, r.event_type) for r in rows] == [
        (with_callback, "request.accepted"),
        (with_callback, "request.claimed"),
        (with_callback, "request.resolved"),
    ]
    accepted, claimed, resolved = (r.event_body for r in rows)
    assert (accepted["request_id"], accepted["state"]) == (with_callback, "waiting")
    assert [d["channel"] for d in accepted["deliveries"]] == ["desk"]
    assert (claimed["state"], claimed["claimed_by"], claimed["via"]) == ("claimed", "ana", "slack")
    assert claimed["claimed_at"] == "2026-03-01T12:00:00Z"
    assert (resolved["state"], resolved["resolved_by"]) == ("resolved", "ana")
