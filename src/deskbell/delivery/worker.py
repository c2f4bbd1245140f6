"""The worker pool: claims due deliveries under a lease and runs each attempt as a task.

One loop claims as many deliveries as it has free slots, never more of a channel than that
channel's `max_concurrency` (minus what it already runs), so a hanging or failing channel
cannot hold every slot. A channel whose breaker is open is still claimed, but its attempts
fail fast unsent (`circuits.py`), so its deliveries go dead on their own retry policy's
schedule. It sleeps until the earliest retry is due, a poll interval passes, or it is woken:
by `wake()` after an ingest in the same process, by a finished attempt, by PostgreSQL
NOTIFY from another node, or on SQLite by another process's commit (`watch.py`).

Claimed deliveries wait in a small local queue (`_ready`, up to `READY_PER_SLOT` times the
slots) and a freed slot takes the next one at once, without waiting for a claim: the loop
claims again when the queue is down to a slot's worth. So sends never wait on the database,
and claims come in batches (a claim costs a transaction whether it takes one delivery or
many). A channel may have `READY_PER_SLOT` times its `max_concurrency` queued beside its
sends (one probe while its breaker is half-open), and a queued delivery starts only while
its channel sends fewer than `max_concurrency`: the others' queued deliveries go first.

An attempt's slot frees up as soon as its send is over; the attempt itself lasts until its
result is committed, which the pool's `AttemptRecorder` does for all the results that
finished together, in one transaction.

A heartbeat renews the leases of all attempts, queued, sending or waiting for their commit,
so a send may take longer than the lease; a killed process stops renewing and its deliveries are
reclaimed when the lease expires. It reports a lease as lost only for an attempt still
sending: one whose result was handed to the recorder meanwhile was given up by our own commit.

A failing claim or renewal is logged once per streak (`streaks.py`), not once per try.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections import Counter, deque
from collections.abc import Callable, Mapping
from datetime import timedelta

import structlog
import uuid_utils

from deskbell.aio import first_completed
from deskbell.callbacks import CALLBACK_CHANNEL
from deskbell.channels.base import Channel, ChannelSettings, SendResult
from deskbell.clock import Clock
from deskbell.delivery.circuits import Circuits
from deskbell.delivery.dispatch import ClaimLinker, dispatch
from deskbell.delivery.notify import listen_for_due_work
from deskbell.delivery.recorder import AttemptRecorder, Handover
from deskbell.delivery.streaks import FailureStreaks, describe
from deskbell.delivery.watch import watch_commits
from deskbell.metrics import Metrics
from deskbell.models import Claimed
from deskbell.storage.sqlite_ingest import sqlite_file
from deskbell.storage.store import Storage
from deskbell.tracing import Tracing

log = structlog.get_logger(__name__)

ChannelLookup = Callable[[], Mapping[str, tuple[Channel, ChannelSettings]]]
MIN_IDLE_SECONDS = 0.01
READY_PER_SLOT = 2  # claimed and waiting to be sent: at most this many per slot


def worker_id() -> str:
    """Unique per process start, readable in the attempts table: host:pid:random."""
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{str(uuid_utils.uuid4())[:8]}"


class WorkerPool:
    def __init__(
        self,
        store: Storage,
        channels: ChannelLookup,
        clock: Clock,
        *,
        concurrency: int = 16,
        lease: timedelta = timedelta(seconds=30),
        poll_seconds: float = 1.0,
        owner: str | None = None,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
        callbacks: tuple[Channel, ChannelSettings] | None = None,
        claim_links: ClaimLinker | None = None,
    ) -> None:
        self.store = store
        self.channels = channels
        # The sender of the bot's events (delivery/callbacks.py), for deliveries on the
        # reserved channel `callback`; None: they go dead as "not in the active config".
        self.callbacks = callbacks
        self.claim_links = claim_links  # emails' claim links (SPEC §9); None: no secret key
        self.clock = clock
        self.concurrency = concurrency
        self.lease = lease
        self.poll_seconds = poll_seconds
        self.owner = owner or worker_id()
        self._wake = asyncio.Event()
        self._idling = False  # waiting for work to become due (not for free slots)
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self.recorder = AttemptRecorder(store.attempts)
        self._inflight: dict[asyncio.Task[None], Claimed] = {}
        self._ready: deque[Claimed] = deque()  # claimed, waiting for a slot
        self._running: Counter[str] = Counter()  # queued or sending, per channel
        self._sends: Counter[str] = Counter()  # sending, per channel
        self._sending = 0
        self._unrecorded: set[str] = set()  # deliveries whose result is not handed over yet
        self._handover = Handover(self.recorder, self._unrecorded)
        self.circuits = Circuits(metrics)
        self.streaks = FailureStreaks(metrics.worker_error if metrics is not None else None)
        self.metrics = metrics
        self.tracing = tracing

    def wake(self) -> None:
        self._wake.set()

    @property
    def attempts(self) -> int:
        """Attempts under way: sending, or waiting for their result's commit."""
        return len(self._inflight)

    async def run(self) -> None:
        # `loop`: which event loop sends (uvloop, or asyncio where uvloop is not installed)
        loop = type(asyncio.get_running_loop()).__module__.partition(".")[0]
        log.info("worker_started", owner=self.owner, concurrency=self.concurrency, loop=loop)
        helpers = [asyncio.create_task(self._heartbeat(), name="deskbell-lease-heartbeat")]
        if self.store.db.writer.dialect.name == "postgresql":
            helpers.append(
                asyncio.create_task(
                    listen_for_due_work(
                        self.store.db.url, self.wake, self._stopping, streaks=self.streaks
                    ),
                    name="deskbell-listen",
                )
            )
        elif (path := sqlite_file(self.store.db.url)) is not None:
            helpers.append(
                asyncio.create_task(
                    watch_commits(
                        path, self.wake, streaks=self.streaks, wanted=lambda: self._idling
                    ),
                    name="deskbell-watch",
                )
            )
        try:
            await self._loop()
            # Keep renewing leases while `stop` lets running attempts finish.
            await self._stopped.wait()
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            self._start_ready()
            limit = self._claimable()
            if limit <= 0 or self._startable() > self.concurrency:
                self._wake.clear()
                await first_completed(self._wake.wait(), self._stopping.wait())
                continue
            self._wake.clear()
            claimed: list[Claimed] = []
            try:
                claimed = await self.store.queue.claim(
                    self.owner,
                    self.clock.now(),
                    lease=self.lease,
                    limit=limit,
                    room=self._room(),
                )
            except Exception as exc:
                self.streaks.failed("claim", exc)
            else:
                self.streaks.succeeded("claim")
            if self._stopping.is_set():
                # `stop` has waited for the attempts it knew of; these were claimed meanwhile
                # and go back to the queue rather than out from a pool that has stopped.
                released = await self._give_back(claimed)
                log.info("claimed_while_stopping", owner=self.owner, released=released)
                break
            for item in claimed:
                self._running[item.delivery.channel] += 1
                self._ready.append(item)
            self._start_ready()
            if len(claimed) < limit:  # fewer than asked for: nothing more is due yet
                await self._idle()

    def _room(self) -> dict[str, int]:
        """Per channel, how many a claim may take: the breakers' room, and the events' own
        slots (no breaker: one bot's failures must not pause another's events); a channel's
        queued deliveries count against its share of the queue."""
        room = self.circuits.room(
            self.channels(),
            self._running,
            self.clock.now(),
            queued_per_send=READY_PER_SLOT,
            queued=self._running - self._sends,
        )
        if self.callbacks is not None:
            limit = (1 + READY_PER_SLOT) * self._send_limit(CALLBACK_CHANNEL)
            room[CALLBACK_CHANNEL] = max(0, limit - self._running[CALLBACK_CHANNEL])
        return room

    async def _give_back(self, claimed: list[Claimed]) -> int:
        """Deliveries held but not to be sent go back, due now, the attempt not counted; if
        that fails, their leases expire and another worker takes them. How many went back."""
        try:
            return await self.store.queue.release_many(claimed, self.clock.now()) if claimed else 0
        except Exception as exc:
            if self.metrics is not None:
                self.metrics.worker_error("release")
            log.warning("release_failed", deliveries=len(claimed), error=describe(exc))
            log.debug("release_failed_traceback", exc_info=exc)
            return 0

    def _free(self) -> int:
        """Slots for new sends: `concurrency` sends at a time, and no more than as many
        again waiting for their commit (should the database fall behind)."""
        return min(self.concurrency - self._sending, 2 * self.concurrency - len(self._inflight))

    def _claimable(self) -> int:
        """How many a claim may take: the local queue holds up to `READY_PER_SLOT` times the
        slots, beside what is sending."""
        held = self._sending + len(self._ready)
        return (1 + READY_PER_SLOT) * self.concurrency - held

    def _startable(self) -> int:
        """Queued deliveries whose channel may start another send: those of a channel at its
        `max_concurrency` do not stop the loop claiming other channels' work."""
        limits: dict[str, bool] = {}
        count = 0
        for item in self._ready:
            channel = item.delivery.channel
            if channel not in limits:
                limits[channel] = self._sends[channel] < self._send_limit(channel)
            count += limits[channel]
        return count

    def _start_ready(self) -> None:
        """Start queued deliveries, in order, while slots are free, skipping those whose
        channel already sends its `max_concurrency` (not once stopping: `stop` gives what is
        still queued back)."""
        if self._stopping.is_set():
            return
        waiting: list[Claimed] = []
        full: set[str] = set()
        while self._ready and self._free() > 0:
            item = self._ready.popleft()
            channel = item.delivery.channel
            if channel in full or self._sends[channel] >= self._send_limit(channel):
                full.add(channel)
                waiting.append(item)
                continue
            self._start(item)
        self._ready.extendleft(reversed(waiting))

    def _send_limit(self, channel: str) -> int:
        """How many of `channel` may send at once: its `max_concurrency`; a channel the
        config no longer names fails at once, so only the slots limit it."""
        if channel == CALLBACK_CHANNEL and self.callbacks is not None:
            return self.callbacks[1].max_concurrency
        entry = self.channels().get(channel)
        return entry[1].max_concurrency if entry is not None else self.concurrency

    def _start(self, claimed: Claimed) -> None:
        """Run one attempt as a task. Its slot (and its channel's) frees up when the send is
        over; the task, and with it the lease renewal, lasts until the result is committed."""
        channel = claimed.delivery.channel
        stand_in = self.circuits.stand_in(channel, self.clock.now())
        probe = stand_in is None and self.circuits.is_probe(channel)
        self._sending += 1
        self._sends[channel] += 1
        self._unrecorded.add(claimed.delivery.id)
        sending = True

        def sent(result: SendResult | None) -> None:
            nonlocal sending
            if not sending:
                return
            sending = False
            self._running[channel] -= 1
            self._sends[channel] -= 1
            self._sending -= 1
            # The breaker hears of a real send first, so the delivery that takes the freed
            # slot is sent (or failed fast) by the breaker's new state.
            if stand_in is None:  # failed fast: the breaker hears only of real sends
                if result is not None:
                    self.circuits.feed(channel, result, self.clock.now())
                elif probe:
                    self.circuits.abandoned(channel)
            self._start_ready()  # a slot is free: the next queued delivery takes it
            self._wake.set()  # and the loop may claim more

        channels = self.channels()
        if channel == CALLBACK_CHANNEL and self.callbacks is not None:
            channels = {**channels, CALLBACK_CHANNEL: self.callbacks}
        entry = channels.get(channel)
        if stand_in is not None and entry is not None:
            channels = {**channels, channel: (stand_in, entry[1])}
        task = asyncio.create_task(self._attempt(claimed, channels, sent, stand_in is not None))
        self._inflight[task] = claimed

        def done(finished: asyncio.Task[None]) -> None:
            self._inflight.pop(finished, None)
            self._unrecorded.discard(claimed.delivery.id)
            sent(None)  # cancelled or crashed before its send was over
            self._start_ready()  # a commit done frees room under the 2x cap too
            self._wake.set()

        task.add_done_callback(done)

    async def _attempt(
        self,
        claimed: Claimed,
        channels: Mapping[str, tuple[Channel, ChannelSettings]],
        sent: Callable[[SendResult], None],
        failing_fast: bool,
    ) -> None:
        try:
            recorded = await dispatch(
                claimed,
                channels,
                self._handover,
                self.clock,
                metrics=None if failing_fast else self.metrics,
                tracing=self.tracing,
                on_sent=sent,
                claim_links=self.claim_links,
            )
            if failing_fast and recorded is not None and self.metrics is not None:
                self.metrics.short_circuit(claimed.delivery.channel, recorded.status)
        except Exception:
            log.exception("attempt_failed", delivery_id=claimed.delivery.id)

    async def _heartbeat(self) -> None:
        interval = self.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            held = [c.delivery.id for c in (*self._inflight.values(), *self._ready)]
            if not held:
                continue
            try:
                kept = await self.store.queue.renew(
                    self.owner, held, self.clock.now(), lease=self.lease
                )
            except Exception as exc:
                self.streaks.failed("lease_renew", exc)
                continue
            self.streaks.succeeded("lease_renew")
            # Not renewed because our own commit settled it meanwhile is no loss: only an
            # attempt that has still not handed its result over lost its lease.
            for lost in set(held) - kept:
                if lost in self._unrecorded:
                    log.warning("lease_lost", delivery_id=lost)

    async def _idle(self) -> None:
        now = self.clock.now()
        timeout = self.poll_seconds
        try:
            due = await self.store.queue.next_due_at()
        except Exception:
            due = None
        if due is not None:
            timeout = min(timeout, (due - now).total_seconds())
        for reopens in self.circuits.reopens_at():
            timeout = min(timeout, (reopens - now).total_seconds())
        # A due delivery we may not claim yet (its channel is full) must not make us spin.
        self._idling = True
        try:
            await first_completed(
                self._wake.wait(), self._stopping.wait(), timeout=max(MIN_IDLE_SECONDS, timeout)
            )
        finally:
            self._idling = False

    async def stop(self, grace: float = 10.0) -> None:
        """Stop claiming, let running attempts finish for up to `grace` seconds, then cancel
        the rest and give their deliveries back (due now, the attempt not counted).

        Results already handed to the recorder are committed before anything is released,
        even those whose task was cancelled while waiting for the commit: their send happened.
        """
        self._stopping.set()
        try:
            pending: set[asyncio.Task[None]] = set()
            if self._inflight:
                _, pending = await asyncio.wait(list(self._inflight), timeout=grace)
            unfinished = [self._inflight[t] for t in pending if t in self._inflight]
            unfinished += self._ready  # claimed, never started
            self._ready.clear()
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
            await self.recorder.aclose()
            released = await self._give_back(unfinished)
        except Exception:
            log.exception("stop_failed")
            released = 0
        finally:
            self._stopped.set()  # `run` may end: its heartbeat is no longer needed
        log.info("worker_stopped", owner=self.owner, released=released)
