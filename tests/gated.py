"""`GatedStorage`: the real storage, with gates a test opens and closes to hold a worker pool
at a chosen step (a result commit, a claim, a lease renewal) and counters of what went by.

Every gate starts open; a test clears one to hold that step and sets it to let it go.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from deskbell.models import AttemptResult, Claimed
from deskbell.storage.attempts import Attempts
from deskbell.storage.engine import Database
from deskbell.storage.queue import DeliveryQueue
from deskbell.storage.store import Storage


def _open_gate() -> asyncio.Event:
    gate = asyncio.Event()
    gate.set()
    return gate


class GatedStorage:
    """`record_gate` holds result commits (`batches` counts their sizes), `claim_gate` every
    claim that took something, after its commit (`claims`, `claim_held`), `renew_gate` lease
    renewals (`renew_waiting`, `renewed`: (asked, kept))."""

    def __init__(self, db: Database) -> None:
        real = Storage.open(db)
        self.db, self.requests, self.reads, self.keys = db, real.requests, real.reads, real.keys
        self.queue = _GatedQueue(db, self)
        self.attempts = _GatedAttempts(db, self)
        self.record_gate = _open_gate()
        self.claim_gate = _open_gate()
        self.renew_gate = _open_gate()
        self.claim_held = asyncio.Event()
        self.renew_waiting = asyncio.Event()
        self.batches: list[int] = []
        self.claims: list[int] = []
        self.renewed: list[tuple[set[str], set[str]]] = []


class _GatedAttempts(Attempts):
    def __init__(self, db: Database, gates: GatedStorage) -> None:
        super().__init__(db)
        self.gates = gates

    async def record_attempts(self, items: Sequence[tuple[Claimed, AttemptResult]]) -> list[bool]:
        await self.gates.record_gate.wait()
        self.gates.batches.append(len(items))
        return await super().record_attempts(items)


class _GatedQueue(DeliveryQueue):
    def __init__(self, db: Database, gates: GatedStorage) -> None:
        super().__init__(db)
        self.gates = gates

    async def claim(
        self,
        owner: str,
        now: datetime,
        *,
        lease: timedelta,
        limit: int,
        room: Mapping[str, int] | None = None,
    ) -> list[Claimed]:
        found = await super().claim(owner, now, lease=lease, limit=limit, room=room)
        if found:
            self.gates.claims.append(len(found))
            self.gates.claim_held.set()
            await self.gates.claim_gate.wait()
        return found

    async def renew(
        self, owner: str, delivery_ids: Sequence[str], now: datetime, *, lease: timedelta
    ) -> set[str]:
        self.gates.renew_waiting.set()
        await self.gates.renew_gate.wait()
        kept = await super().renew(owner, delivery_ids, now, lease=lease)
        self.gates.renewed.append((set(delivery_ids), kept))
        return kept
