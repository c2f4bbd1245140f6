"""The handoff service (SPEC §9): every way of claiming or resolving a request goes through here.

The API, the CLI, the Slack button and the email link all call `claim` / `resolve`, so each
gets the same rules: one winner however many claim at once (the store's conditional UPDATE),
a repeat claim by the holder is answered as a win (a double click, a retried request), the
escalation steps not yet sent are cancelled and the bot's event is queued in the same
transaction, and the time to claim is measured once, by the winner.

Resolve is allowed from `waiting` or `claimed`, whoever holds the claim (a colleague or a lead
may close a request for someone away); `resolved` is final, so a later claim or resolve by
anyone else is answered with who resolved it (won=False).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from deskbell.models import HANDOFF_VIAS, Handoff, HandoffState

if TYPE_CHECKING:
    from deskbell.storage.handoff import Handoffs, Transition
    from deskbell.wiring import Runtime

MAX_NAME_CHARS = 128  # requests.claimed_by / resolved_by


@dataclass(frozen=True, slots=True)
class HandoffOutcome:
    """What a claim or resolve came to. `won` is False when someone else holds the request
    (or it is resolved): `claimed_by` (or `resolved_by`) then names who."""

    won: bool
    state: str  # waiting | claimed | resolved
    claimed_by: str | None
    claimed_at: datetime | None
    via: str | None
    resolved_by: str | None = None
    resolved_at: datetime | None = None
    handoff: Handoff | None = None  # the whole handoff, escalations included, for answers


def clean_name(value: str) -> str:
    """Who claims: trimmed, 1..128 characters, no control characters (it goes into Slack
    messages, emails and log lines). Raises ValueError naming the rule."""
    name = value.strip()
    if not 1 <= len(name) <= MAX_NAME_CHARS:
        raise ValueError(f"must be 1..{MAX_NAME_CHARS} characters once trimmed")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name):
        raise ValueError("must not contain control characters")
    return name


def _check_via(via: str) -> str:
    if via not in HANDOFF_VIAS:
        raise ValueError(f"via must be one of {', '.join(sorted(HANDOFF_VIAS))}")
    return via


def _outcome(won: bool, t: Transition) -> HandoffOutcome:
    h = t.handoff
    return HandoffOutcome(
        won, h.state.value, h.claimed_by, h.claimed_at, h.via, h.resolved_by, h.resolved_at, h
    )


async def claim(runtime: Runtime, request_id: str, *, by: str, via: str) -> HandoffOutcome:
    """Claim `request_id` for `by`. won=True when this call claimed it, or `by` already held
    it; won=False when someone else holds it or it is resolved. Raises NotFound for an
    unknown request, ValueError for a bad name or `via`."""
    outcome, t = await claim_in(runtime.store.handoff, request_id, by, via, runtime.clock.now())
    if t.changed:
        claimed_at = t.handoff.claimed_at or t.accepted_at
        runtime.metrics.claimed(t.topic, (claimed_at - t.accepted_at).total_seconds())
        runtime.wake_workers()  # the bot's event, if it has a callback
    return outcome


async def resolve(runtime: Runtime, request_id: str, *, by: str, via: str) -> HandoffOutcome:
    """Resolve `request_id` as `by`. won=True when this call resolved it, or `by` already
    had; won=False when someone else resolved it first. Raises NotFound for an unknown
    request, ValueError for a bad name or `via`."""
    outcome, t = await resolve_in(runtime.store.handoff, request_id, by, via, runtime.clock.now())
    if t.changed:
        runtime.wake_workers()
    return outcome


async def claim_in(
    handoffs: Handoffs, request_id: str, by: str, via: str, now: datetime
) -> tuple[HandoffOutcome, Transition]:
    """`claim`'s rules on the store alone, for a process without a runtime (the CLI): no
    metric, no worker to wake (the event waits for the next poll or NOTIFY)."""
    by, via = clean_name(by), _check_via(via)
    t = await handoffs.claim(request_id, by=by, via=via, now=now)
    h = t.handoff
    won = t.changed or (h.state is HandoffState.CLAIMED and h.claimed_by == by)
    return _outcome(won, t), t


async def resolve_in(
    handoffs: Handoffs, request_id: str, by: str, via: str, now: datetime
) -> tuple[HandoffOutcome, Transition]:
    """`resolve`'s rules on the store alone (the CLI)."""
    by, via = clean_name(by), _check_via(via)
    t = await handoffs.resolve(request_id, by=by, via=via, now=now)
    return _outcome(t.changed or t.handoff.resolved_by == by, t), t


__all__ = ["HandoffOutcome", "claim", "claim_in", "clean_name", "resolve", "resolve_in"]
