"""Composition root: builds the store, channels, router and workers from settings.

No module-level globals anywhere; a test builds a whole runtime (or app) in one call and
tears it down after.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import IO

import httpx
import structlog

from deskbell.api.claim_links import ClaimLinks
from deskbell.channels import build_registry
from deskbell.channels.base import Channel, ChannelContext, ChannelSettings, ChannelType
from deskbell.channels.kit.http import ChannelHTTPClient
from deskbell.clock import Clock, SystemClock
from deskbell.config.load import DEMO_CONFIG_YAML, parse_config
from deskbell.config.schema import DeskbellConfig
from deskbell.delivery.callbacks import callback_channel
from deskbell.delivery.worker import WorkerPool
from deskbell.errors import ConfigError
from deskbell.live import ActiveConfig, LiveConfig, build_active, config_file
from deskbell.metrics import Metrics
from deskbell.models import NO_TRACE, AssistanceRequestIn, Receipt, RequestTrace
from deskbell.routing.router import Target
from deskbell.settings import Settings
from deskbell.storage.engine import Database, connect
from deskbell.storage.health import WriteProbe
from deskbell.storage.ingest import Ingest
from deskbell.storage.store import Storage
from deskbell.tracing import Tracing

log = structlog.get_logger(__name__)


def read_config(
    settings: Settings, registry: Mapping[str, ChannelType]
) -> tuple[DeskbellConfig, str]:
    """The file named by DESKBELL_CONFIG; with none set and no ./deskbell.yaml, the demo."""
    config, source, _ = read_startup_config(settings, registry)
    return config, source


def read_startup_config(
    settings: Settings, registry: Mapping[str, ChannelType]
) -> tuple[DeskbellConfig, str, str]:
    """`read_config` with the text it was built from (start-up adoption stores that text as
    a version when it differs from the active one)."""
    if config_file(settings) is not None:
        path = settings.config
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
        try:
            config = parse_config(text, registry, base_dir=path.parent)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        return config, str(path), text
    log.warning(
        "demo_config",
        message="no deskbell.yaml found: using the built-in demo config "
        "(sales and pricing go to the console); run `deskbell init` to write your own",
    )
    return parse_config(DEMO_CONFIG_YAML, registry), "built-in demo", DEMO_CONFIG_YAML


@dataclass
class Runtime:
    settings: Settings
    db: Database
    store: Storage
    registry: Mapping[str, ChannelType]
    clock: Clock
    http: httpx.AsyncClient
    active: ActiveConfig
    channel_context: ChannelContext
    workers: WorkerPool | None = None
    metrics: Metrics = field(default_factory=Metrics)
    tracing: Tracing = field(default_factory=Tracing.off)
    _worker_task: asyncio.Task[None] | None = field(default=None, repr=False)
    write_probe: WriteProbe = field(init=False, repr=False)  # /readyz: do writes commit?
    live: LiveConfig = field(init=False, repr=False)  # follows the active stored version

    def __post_init__(self) -> None:
        self.write_probe = WriteProbe(self.db, self.clock)
        self.live = LiveConfig(self)

    @property
    def ingest(self) -> Ingest:
        """Where new requests are stored (`store.requests`)."""
        return self.store.requests

    def channels(self) -> Mapping[str, tuple[Channel, ChannelSettings]]:
        return self.active.channels

    async def accept(
        self,
        payload: AssistanceRequestIn,
        targets: Sequence[Target],
        *,
        idempotency_key: str | None = None,
        body_hash: str | None = None,
        trace: RequestTrace = NO_TRACE,
        source: str | None = None,
        callback_url: str | None = None,
    ) -> tuple[Receipt, bool]:
        """Store a request; returns (receipt, created). Without an Idempotency-Key it joins
        the group commit; with one it takes its own transaction (the key must be checked and
        claimed atomically, and such requests are rare). `source` and `callback_url`: who
        sent it and where the bot hears about it (SPEC §9), stored with it."""
        if idempotency_key is None:
            receipt = await self.ingest.accept(
                payload, targets, trace, source=source, callback_url=callback_url
            )
            return receipt, True
        return await self.store.requests.accept_one(
            payload,
            targets,
            self.clock.now(),
            idempotency_key=idempotency_key,
            body_hash=body_hash,
            trace=trace,
            source=source,
            callback_url=callback_url,
        )

    def start_workers(self) -> None:
        if self.workers is not None and self._worker_task is None:
            self._worker_task = asyncio.create_task(self.workers.run(), name="deskbell-workers")

    def wake_workers(self) -> None:
        if self.workers is not None:
            self.workers.wake()

    async def aclose(self) -> None:
        await self.live.stop()
        await self.store.aclose()
        self.metrics.flush()  # what the last second counted, into this process's files too
        if self.workers is not None:
            await self.workers.stop(self.settings.shutdown_grace_seconds)
        if self._worker_task is not None:
            await self._worker_task
            self._worker_task = None
        await self.http.aclose()
        await self.db.dispose()
        self.tracing.shutdown()


def build_runtime(
    settings: Settings,
    *,
    with_workers: bool = True,
    clock: Clock | None = None,
    extra_channel_types: Iterable[ChannelType] = (),
    console: IO[str] | None = None,
    tracing: Tracing | None = None,
) -> Runtime:
    """Everything a process needs, not started: call `start_workers()` inside the event loop."""
    registry = build_registry(extra_channel_types)
    config, source, text = read_startup_config(settings, registry)
    clock = clock or SystemClock()
    http = ChannelHTTPClient()
    ctx = ChannelContext(http=http, clock=clock, console=console)
    active = build_active(config, source, registry, ctx, text=text)
    db = connect(settings.database_url)
    store = Storage.open(db, clock.now, ingest_timeout=settings.ingest_timeout)
    runtime = Runtime(settings, db, store, registry, clock, http, active, ctx)
    runtime.metrics = Metrics(topics=active.router.known_topics(), channels=active.channels)
    runtime.tracing = tracing or Tracing.from_env()
    if with_workers:
        runtime.workers = WorkerPool(
            store,
            runtime.channels,
            clock,
            concurrency=settings.workers,
            lease=timedelta(seconds=settings.lease_seconds),
            poll_seconds=settings.poll_seconds,
            metrics=runtime.metrics,
            tracing=runtime.tracing,
            claim_links=ClaimLinks.from_settings(settings, clock),  # None: no secret key
            callbacks=callback_channel(db, http, clock, lambda: runtime.active.config.sources),
        )
    return runtime


__all__ = [
    "ActiveConfig",
    "ConfigError",
    "Runtime",
    "build_runtime",
    "config_file",
    "read_config",
    "read_startup_config",
]
