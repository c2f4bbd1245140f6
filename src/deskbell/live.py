"""The node follows the active config version (SPEC §8): every process, within seconds.

`ActiveConfig` is what requests and sends read: built once from one document, swapped whole
(`runtime.active = ...`), never edited, so a request that read it keeps a consistent config to
its end. `LiveConfig` (one per runtime, `runtime.live`) knows which stored version this node
runs and why it refused a newer one. `sync()` reads the active number (cheap) and, when it
changed, loads that version, builds it with this node's environment and secret key, and swaps;
a version this node cannot build is refused loudly and the old config stays.

The watcher (`start`) runs in every process: it first adopts the start-up document (file mode,
`adopt_startup`), then syncs every `config_poll_seconds` and, on PostgreSQL, the moment a
`deskbell_config` NOTIFY arrives (`delivery/notify.py`'s reconnecting listener). SIGHUP asks
it to re-read the file (`request_reload`).

Channels whose settings did not change keep their objects (and so their connection pools and
the worker's breakers, which are keyed by name); the objects of changed and removed channels
are closed once no send can still be using them (each send is bounded by its channel's
timeout), if they have anything to close.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from deskbell.aio import first_completed
from deskbell.channels.base import Channel, ChannelContext, ChannelSettings, ChannelType
from deskbell.config.changes import summarize
from deskbell.config.document import build_config, digest, document_from_text
from deskbell.config.load import build_router, parse_config
from deskbell.config.schema import DeskbellConfig
from deskbell.config.secrets import seal_document
from deskbell.delivery.notify import listen_for_due_work
from deskbell.errors import ConfigError, StaleVersion
from deskbell.routing.router import Router
from deskbell.settings import Settings
from deskbell.storage.config_versions import CONFIG_CHANNEL, ConfigVersion, ConfigVersions

if TYPE_CHECKING:
    from deskbell.wiring import Runtime

log = structlog.get_logger(__name__)
CLOSE_MARGIN_SECONDS = 2.0  # after the longest send an old channel object may still run
FIRST_TURN_SECONDS = 15.0  # start-up adoption waits no longer; the watcher goes on
ADOPT_TRIES = 5  # start-up adoption racing other processes' (StaleVersion): read again, retry
FILE_ORIGIN = "file"
DEMO_AUTHOR = "built-in demo"
YAML = "application/yaml"

Channels = Mapping[str, tuple[Channel, ChannelSettings]]


@dataclass(frozen=True)
class ActiveConfig:
    """A validated config with what is built from it; swapped whole, never edited in place.

    `text` is the document it was built from when that came from a file or the built-in demo
    (start-up adoption stores it as a version); `version` the stored version it is, once
    known."""

    config: DeskbellConfig
    source: str
    router: Router
    channels: Channels
    text: str | None = None
    version: int | None = None


def build_channels(
    config: DeskbellConfig,
    registry: Mapping[str, ChannelType],
    ctx: ChannelContext,
    previous: Channels | None = None,
) -> dict[str, tuple[Channel, ChannelSettings]]:
    """The config's channel objects; one whose settings equal the previous config's is
    reused as it is (its pools and breaker go on)."""
    previous = previous or {}
    built: dict[str, tuple[Channel, ChannelSettings]] = {}
    for name, settings in config.channels.items():
        old = previous.get(name)
        if old is not None and old[1] == settings:
            built[name] = old
        else:
            built[name] = (registry[settings.type].factory(name, settings, ctx), settings)
    return built


def build_active(
    config: DeskbellConfig,
    source: str,
    registry: Mapping[str, ChannelType],
    ctx: ChannelContext,
    *,
    previous: Channels | None = None,
    text: str | None = None,
    version: int | None = None,
) -> ActiveConfig:
    return ActiveConfig(
        config,
        source,
        build_router(config),
        build_channels(config, registry, ctx, previous),
        text=text,
        version=version,
    )


def retired(old: Channels, new: Channels) -> list[tuple[Channel, ChannelSettings]]:
    """Old channel objects the new config no longer uses (changed or removed)."""
    kept = {id(channel) for channel, _ in new.values()}
    return [(channel, settings) for channel, settings in old.values() if id(channel) not in kept]


class LiveConfig:
    """Which stored version this node runs, which one it refused and why; the watcher."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.refused: int | None = None  # the active version this node could not build
        self.error: str | None = None  # why
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._adopted = False
        self._reload = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def number(self) -> int | None:
        """The stored version this node runs (None: not known yet)."""
        return self.runtime.active.version

    @property
    def _versions(self) -> ConfigVersions:
        return self.runtime.store.config

    async def sync(self) -> bool:
        """Follow the active stored version now; True if this node switched to another."""
        async with self._lock:
            number = await self._versions.active_number()
            if number is None or number == self.number:
                self.refused = self.error = None
                return False
            if number == self.refused:
                return False  # refused once, loudly; this node's environment has not changed
            stored = await self._versions.get(number)
            return stored is not None and self._switch(stored)

    def _switch(self, stored: ConfigVersion) -> bool:
        """Build a stored version and swap it in; refuse it (and keep the old) if this node
        cannot build it."""
        runtime = self.runtime
        try:
            config = build_config(
                stored.document,
                runtime.registry,
                env=os.environ,
                secret_key=secret_key(runtime.settings),
                base_dir=base_dir(runtime.settings),
            )
        except ConfigError as exc:
            self.refused, self.error = stored.number, str(exc)
            log.error(
                "config_refused",
                version=stored.number,
                running=self.number,
                reason=str(exc),
                message="this node keeps the config it runs; /readyz says so",
            )
            return False
        self._swap(config, stored)
        return True

    def _swap(self, config: DeskbellConfig, stored: ConfigVersion) -> None:
        runtime = self.runtime
        old = runtime.active
        new = build_active(
            config,
            f"version {stored.number}",
            runtime.registry,
            runtime.channel_context,
            previous=old.channels,
            version=stored.number,
        )
        runtime.active = new
        self.refused = self.error = None
        self._activated(new, stored, previous=old.version)
        self._close_when_idle(retired(old.channels, new.channels))

    def _activated(
        self, active: ActiveConfig, stored: ConfigVersion, *, previous: int | None
    ) -> None:
        """The one log line per activation per process, and the metrics that follow it."""
        self.runtime.metrics.follow_config(
            active.router.known_topics(), active.channels, stored.number
        )
        summary = stored.summary
        log.info(
            "config_activated",
            version=stored.number,
            previous=previous,
            author=stored.author,
            origin=stored.origin,
            channels=len(active.channels),
            routes=len(active.config.routes),
            **{
                f"{part}_{change}": len(names)
                for part in ("channels", "routes")
                for change, names in (summary.get(part) or {}).items()
                if names
            },
        )

    def _close_when_idle(self, old: list[tuple[Channel, ChannelSettings]]) -> None:
        """Close (if they hold anything) the old objects once every send that may use them
        has ended: a send is bounded by its channel's timeout."""
        for channel, settings in old:
            aclose: Callable[[], Any] | None = getattr(channel, "aclose", None)
            if aclose is None:
                continue
            delay = settings.timeout + CLOSE_MARGIN_SECONDS
            task = asyncio.create_task(_close_later(aclose, delay))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    # Start-up and SIGHUP -------------------------------------------------------------------

    async def adopt_startup(self) -> None:
        """File mode (SPEC §8): the document this process started with becomes a version when
        it differs from the active one and changed since the file was last stored (so a
        restart does not undo an API change or a rollback); with no version at all, the file
        or the built-in demo is version 1. When the active version is that document, this
        node runs it as built; otherwise the next `sync` switches to the active one."""
        active = self.runtime.active
        if active.text is None:
            return
        settings = self.runtime.settings
        path = config_file(settings)
        try:
            if path is None:
                stored = await adopt_demo(self._versions, active.text)
            else:
                stored = await adopt_file(
                    self._versions,
                    active.text,
                    author=f"file:{path}",
                    registry=self.runtime.registry,
                    secret_key=secret_key(settings),
                )
        except ConfigError as exc:  # literal secrets and no DESKBELL_SECRET_KEY
            log.warning(
                "config_file_not_stored",
                file=str(path),
                reason=str(exc),
                message="this node runs the file until a version is active in the database "
                "(then it follows that one, like every node); other nodes do not see the file",
            )
            return
        if stored is not None and self.runtime.active is active:
            self.runtime.active = dataclasses.replace(active, version=stored.number)
            self._activated(self.runtime.active, stored, previous=None)

    async def reload(self) -> ConfigVersion | None:
        """SIGHUP: read the file again; valid and different, it becomes the active version
        (every node follows); invalid, the old config stays and the log says why."""
        try:
            stored = await reload_file(self._versions, self.runtime.settings, self.runtime.registry)
        except ConfigError as exc:
            log.error("config_reload_failed", reason=str(exc), message="the config stays as it was")
            return None
        await self.sync()
        return stored

    # The watcher ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Adopt the start-up document, then follow the active version in the background
        (and, on PostgreSQL, LISTEN). Never raises: with the database unreachable the watcher
        goes on trying."""
        if self._tasks:
            return
        self._loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(FIRST_TURN_SECONDS):
                await self._turn()
        except TimeoutError:  # a database that does not answer: serve, keep trying
            log.warning("config_sync_slow", seconds=FIRST_TURN_SECONDS)
        self._tasks.append(asyncio.create_task(self._run(), name="deskbell-live-config"))
        db = self.runtime.db
        if db.writer.dialect.name == "postgresql":
            listen = listen_for_due_work(
                db.url,
                self._wake.set,
                self._stopping,
                channel=CONFIG_CHANNEL,
                operation="config_listen",
            )
            self._tasks.append(asyncio.create_task(listen, name="deskbell-config-listen"))

    def request_reload(self) -> None:
        """SIGHUP: re-read the file at the watcher's next turn (safe in a signal handler)."""
        self._reload = True
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def _turn(self) -> None:
        try:
            if not self._adopted:
                await self.adopt_startup()
                self._adopted = True
            if self._reload:
                self._reload = False
                await self.reload()
            await self.sync()
        except Exception as exc:  # the database, mostly: polling tries again
            log.warning("config_sync_failed", error=f"{type(exc).__name__}: {exc}")

    async def _run(self) -> None:
        poll = self.runtime.settings.config_poll_seconds
        while not self._stopping.is_set():
            self._wake.clear()
            await first_completed(self._wake.wait(), self._stopping.wait(), timeout=poll)
            if not self._stopping.is_set():
                await self._turn()

    async def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        tasks, self._tasks = self._tasks, []
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in list(self._closing):
            task.cancel()


async def _close_later(aclose: Callable[[], Any], delay: float) -> None:
    await asyncio.sleep(delay)
    try:
        await aclose()
    except Exception as exc:
        log.warning("channel_close_failed", error=f"{type(exc).__name__}: {exc}")


def secret_key(settings: Settings) -> str | None:
    return settings.secret_key.get_secret_value() or None


def config_file(settings: Settings) -> Path | None:
    """The config file this process reads at start and on SIGHUP: DESKBELL_CONFIG when set,
    else ./deskbell.yaml if it exists; None: the built-in demo."""
    explicit = "config" in settings.model_fields_set
    return settings.config if settings.config.exists() or explicit else None


def base_dir(settings: Settings) -> Path | None:
    """Where a stored document's relative paths (template files) start on this node: the
    config file's directory, as for the file itself."""
    path = config_file(settings)
    return None if path is None else path.parent


async def adopt_demo(versions: ConfigVersions, text: str) -> ConfigVersion | None:
    """With no version at all, the built-in demo becomes version 1 (the version it is, if
    another process stored it first); with any version, None: the node follows that."""
    document = document_from_text(text, YAML)
    try:
        return await versions.create(
            document,
            author=DEMO_AUTHOR,
            origin=FILE_ORIGIN,
            summary=summarize(None, document),
            expected=0,
        )
    except StaleVersion:
        active = await versions.active()
        return active if active is not None and active.digest == digest(document) else None


async def adopt_file(
    versions: ConfigVersions,
    text: str,
    *,
    author: str,
    registry: Mapping[str, ChannelType],
    secret_key: str | None,
    force: bool = False,
) -> ConfigVersion | None:
    """Store a file's document as the active version, unless the active one already is it
    (answered) or, without `force`, the file is unchanged since it was last stored (None: a
    later version replaced it on purpose, e.g. through the API). Several processes starting
    at once store it once: each write names the version it saw active, a stale one reads
    again. Raises ConfigError for literal secrets without a key."""
    document = document_from_text(text, YAML)
    for _ in range(ADOPT_TRIES):
        active = await versions.active()
        previous = active.document if active is not None else None
        sealed = seal_document(document, registry, secret_key, previous)
        if active is not None and digest(sealed) == active.digest:
            return active
        if not force and active is not None:
            last = await last_from_file(versions)
            if last is not None and _same(document, last, registry, secret_key):
                return None
        try:
            return await versions.create(
                sealed,
                author=author,
                origin=FILE_ORIGIN,
                summary=summarize(previous, sealed),
                expected=active.number if active is not None else 0,
            )
        except StaleVersion:
            continue
    log.warning("config_file_adoption_contended", tries=ADOPT_TRIES, author=author)
    return None


async def last_from_file(versions: ConfigVersions) -> ConfigVersion | None:
    """The newest version a file (or the demo) gave."""
    return next((v for v in await versions.list(limit=1000) if v.origin == FILE_ORIGIN), None)


def _same(
    document: Mapping[str, Any],
    stored: ConfigVersion,
    registry: Mapping[str, ChannelType],
    key: str | None,
) -> bool:
    """`document` (secrets in clear) is `stored` (secrets sealed): sealing it with the stored
    tokens gives the stored digest."""
    return digest(seal_document(document, registry, key, stored.document)) == stored.digest


async def reload_file(
    versions: ConfigVersions, settings: Settings, registry: Mapping[str, ChannelType]
) -> ConfigVersion | None:
    """SIGHUP's work, also done by `serve --processes N`'s supervisor: the file, validated
    like at start (ConfigError if it is not), stored and activated if it differs from the
    active version; answers the version that is the file."""
    path = config_file(settings)
    if path is None:
        raise ConfigError("no config file to read again (DESKBELL_CONFIG, ./deskbell.yaml)")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        parse_config(text, registry, base_dir=path.parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    stored = await adopt_file(
        versions,
        text,
        author=f"file:{path}",
        registry=registry,
        secret_key=secret_key(settings),
        force=True,
    )
    log.info("config_reloaded", file=str(path), version=stored.number if stored else None)
    return stored


__all__ = [
    "ActiveConfig",
    "LiveConfig",
    "adopt_file",
    "build_active",
    "build_channels",
    "config_file",
    "reload_file",
    "retired",
]
