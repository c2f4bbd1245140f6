"""The commands that read or change the ledger from a shell: `deskbell requests
list|show|claim|resolve` and `deskbell retry`. They open only the storage object they need,
and never create a database that is not there."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from deskbell.cli.errors import fail, read_settings

if TYPE_CHECKING:
    from deskbell.handoff import HandoffOutcome
    from deskbell.storage.engine import Database
    from deskbell.storage.handoff import Handoffs

T = TypeVar("T")
requests_app = typer.Typer(
    no_args_is_help=True, help="Read stored assistance requests; claim and resolve them."
)


class Status(StrEnum):
    """The values of deskbell.models.DeliveryStatus, without importing pydantic models."""

    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    SENT = "sent"
    RETRYING = "retrying"
    DEAD = "dead"
    CANCELLED = "cancelled"


class HandoffName(StrEnum):
    """The values of deskbell.models.HandoffState, without importing pydantic models."""

    WAITING = "waiting"
    CLAIMED = "claimed"
    RESOLVED = "resolved"


def with_db(action: Callable[[Database], Awaitable[T]]) -> T:
    """Run `action(db)` on the configured database; a SQLite file that is not there is an
    error, never created."""
    import asyncio

    from deskbell.storage.engine import connect

    async def run() -> T:
        db = connect(read_settings().database_url, must_exist=True)
        try:
            return await action(db)
        finally:
            await db.dispose()

    return asyncio.run(run())


@requests_app.command("list")
def requests_list(
    topic: Annotated[str | None, typer.Option()] = None,
    status: Annotated[Status | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    handoff: Annotated[HandoffName | None, typer.Option(help="waiting, claimed, resolved")] = None,
) -> None:
    """The newest requests, one line each (with the handoff state and who holds it)."""
    from deskbell.models import DeliveryStatus, HandoffState
    from deskbell.storage.reads import RequestReads

    wanted = DeliveryStatus(status.value) if status else None
    state = HandoffState(handoff.value) if handoff else None
    items, _ = with_db(
        lambda db: RequestReads(db).list_requests(
            topic=topic, status=wanted, limit=limit, handoff=state
        )
    )
    for item in items:
        states = ", ".join(f"{d.channel}={d.status.value}" for d in item.deliveries)
        h = item.handoff
        who = (
            "" if h is None else f"  {h.state.value}{f' by {h.claimed_by}' if h.claimed_by else ''}"
        )
        typer.echo(
            f"{item.id}  {item.created_at:%Y-%m-%d %H:%M:%S}  {item.payload.topic:<12} {states}"
            f"{who}"
        )


@requests_app.command("show")
def requests_show(request_id: str) -> None:
    """One request with its deliveries, as JSON."""
    from deskbell.api.schemas import render, request_data
    from deskbell.storage.reads import RequestReads

    stored = with_db(lambda db: RequestReads(db).get_request(request_id))
    if stored is None:
        fail(f"no request {request_id}", code=1)
    typer.echo(render(request_data(stored), indent=2).decode())


def retry(delivery_id: str) -> None:
    """Put a dead delivery back to pending."""
    from deskbell.clock import SystemClock
    from deskbell.errors import DeskbellError
    from deskbell.storage.engine import NoDatabase
    from deskbell.storage.queue import DeliveryQueue

    try:
        now = SystemClock().now()
        delivery = with_db(lambda db: DeliveryQueue(db).retry_dead(delivery_id, now))
    except NoDatabase:
        raise
    except DeskbellError as exc:
        fail(f"{type(exc).__name__}: {exc}", code=1)
    typer.echo(f"{delivery.id} is {delivery.status.value}")


@requests_app.command("claim")
def requests_claim(
    request_id: str,
    by: Annotated[str, typer.Option("--by", help="who takes it (1..128 characters)")],
) -> None:
    """Take a request (handoff `waiting` -> `claimed`); refused if someone else holds it."""
    from deskbell.handoff import claim_in

    _handoff(lambda h, now: claim_in(h, request_id, by, "cli", now), "claim")


@requests_app.command("resolve")
def requests_resolve(
    request_id: str,
    by: Annotated[
        str | None, typer.Option("--by", help="who resolves it (default: your user name)")
    ] = None,
) -> None:
    """Close a request (handoff `waiting` or `claimed` -> `resolved`, final)."""
    import getpass

    from deskbell.handoff import resolve_in

    name = by if by is not None else getpass.getuser()
    _handoff(lambda h, now: resolve_in(h, request_id, name, "cli", now), "resolve")


def _handoff(
    action: Callable[[Handoffs, datetime], Awaitable[tuple[HandoffOutcome, object]]], verb: str
) -> None:
    """Run a claim or resolve on the database; one line out, or one line error (exit 2)."""
    from deskbell.clock import SystemClock
    from deskbell.errors import NotFound
    from deskbell.storage.handoff import Handoffs

    now = SystemClock().now()
    try:
        outcome, _ = with_db(lambda db: action(Handoffs(db), now))
    except NotFound as exc:
        fail(str(exc))
    except ValueError as exc:
        fail(f"--by {exc}")
    if outcome.state == "resolved":
        who, at = outcome.resolved_by, outcome.resolved_at
    else:
        who, at = outcome.claimed_by, outcome.claimed_at
    when = f"{at:%Y-%m-%d %H:%M:%S}Z" if at is not None else "?"
    if not outcome.won:
        fail(f"cannot {verb}: already {outcome.state} by {who} at {when}")
    typer.echo(f"{outcome.state} by {who} at {when}")
