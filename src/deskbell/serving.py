"""`deskbell serve`: the API (and workers) in this process, or in N processes on one port.

One process (`--processes 1`, the default) builds the runtime and the app here and runs
uvicorn on it. Several processes use uvicorn's own supervisor (`uvicorn.supervisors.
Multiprocess`, what `uvicorn --workers N` runs): this process checks everything that can be
checked once (settings, config, the bind rule), applies the migrations, binds the socket and
spawns N children; each child builds its own runtime (database engine, group commit, workers)
through `deskbell.api.asgi` and accepts on the shared socket. The supervisor replaces a child
that dies and, on SIGTERM or SIGINT, stops every child gracefully before it returns.

Why the supervisor rather than `uvicorn.run(..., workers=N)`: `run` returns normally when a
child fails to start, so `serve` could not tell "stopped by SIGTERM" (exit 0) from "a child
could not start" (exit 2); with the supervisor object in hand the children's exit codes can
be read after it returns.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING

import structlog

from deskbell.cli_security import check_bind
from deskbell.errors import DeskbellError
from deskbell.metrics import MULTIPROC_ENV
from deskbell.settings import Settings
from deskbell.storage.engine import connect
from deskbell.storage.migrate import upgrade

if TYPE_CHECKING:
    from deskbell.config.schema import DeskbellConfig

log = structlog.get_logger(__name__)
GRACEFUL_SHUTDOWN_SECONDS = 15
HEALTHCHECK_SECONDS = 30
YOUNG_GENERATION_THRESHOLD = 10_000  # allocations between young collections (default 700)
APP_WITH_WORKERS = "deskbell.api.asgi:app_with_workers"
APP_WITHOUT_WORKERS = "deskbell.api.asgi:app_without_workers"
# uvicorn formats each access-log line's arguments (client address, quoted path) before the
# logger checks its level, and `uvicorn.access` is held at WARNING (observability.py): every
# request paid for a line nobody saw. deskbell's own request logs and metrics carry the rest.
ACCESS_LOG = False


class ServerProcessFailed(DeskbellError):
    """A server process of `serve --processes N` exited before it could serve."""


class ServerStartFailed(DeskbellError):
    """uvicorn stopped before serving (its lifespan startup failed)."""


class CannotListen(DeskbellError):
    """The host and port cannot be bound: in use, not an address of this machine, or denied."""


@contextmanager
def listening(settings: Settings) -> Iterator[socket.socket]:
    """The server's listening socket, bound here rather than by uvicorn: uvicorn logs a bind
    failure and calls sys.exit(1), while this names the setting to change. Inheritable, so the
    children of `--processes N` accept on it."""
    host, port = settings.host, settings.port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family=family)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise CannotListen(
                f"port {port} on {host} is in use - stop the process listening there or "
                "choose another port with --port or DESKBELL_PORT"
            ) from None
        raise CannotListen(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}) - choose another address "
            "with --host or DESKBELL_HOST, or another port with --port or DESKBELL_PORT"
        ) from None
    sock.set_inheritable(True)
    try:
        yield sock
    finally:
        sock.close()


async def migrate(settings: Settings) -> None:
    db = connect(settings.database_url)
    try:
        await upgrade(db)
    finally:
        await db.dispose()


def log_config_warnings(config: DeskbellConfig) -> None:
    """What `deskbell config check` warns about, logged once at start (serve or worker)."""
    from deskbell.config.destinations import config_warnings

    for warning in config_warnings(config):
        log.warning("config_warning", message=warning)


def _exit_cleanly(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def settle_heap() -> None:
    """Keep the cyclic garbage collector off the long-lived startup heap.

    A full collection walks every tracked object, and after startup that is tens of thousands
    of objects that live as long as the process (FastAPI and pydantic schemas, SQLAlchemy
    metadata): those pauses were the ingest's p99 (98 ms; 19 ms with the heap frozen). Freezing
    moves them out of collection; a larger young generation makes the remaining collections
    rarer (measured: 5,584 -> 6,008 req/s, p99 15.7 ms). Servers only: tests build many apps
    in one process and must see their objects collected.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, middle, old)


def serve_here(settings: Settings, *, with_workers: bool, insecure: bool) -> None:
    """One process: API and (unless `with_workers` is false) the delivery workers."""
    import uvicorn

    from deskbell.api.app import create_app
    from deskbell.api.head_limit import HeadLimitedProtocol
    from deskbell.wiring import build_runtime

    asyncio.run(migrate(settings))
    runtime = build_runtime(settings, with_workers=with_workers)
    log_config_warnings(runtime.active.config)
    check_bind(settings, runtime.active.config, insecure=insecure)
    api = create_app(runtime)
    settle_heap()
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal; answering that with
    # exit 0 tells a supervisor the stop was clean.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    server = uvicorn.Server(
        uvicorn.Config(
            api,
            host=settings.host,
            port=settings.port,
            http=HeadLimitedProtocol,
            workers=1,  # explicit, so a WEB_CONCURRENCY in the environment cannot change it
            log_config=None,
            access_log=ACCESS_LOG,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        )
    )
    with listening(settings) as sock, suppress(KeyboardInterrupt):  # SIGINT: a clean stop
        server.run(sockets=[sock])
    if not server.started:
        raise ServerStartFailed("the server could not start; its error is logged above")


def serve_processes(settings: Settings, *, with_workers: bool, insecure: bool) -> None:
    """`settings.processes` server processes on one socket; returns once they all stopped.

    Raises DeskbellError (config, bind rule, socket, a child that could not start) and the
    database's errors."""
    from uvicorn import Config
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    from deskbell.api.head_limit import HeadLimitedProtocol
    from deskbell.channels import build_registry
    from deskbell.wiring import read_config

    config, _ = read_config(settings, build_registry())  # fails here, not in N children
    log_config_warnings(config)
    asyncio.run(migrate(settings))  # once, before any child opens the database
    check_bind(settings, config, insecure=insecure)  # reads api_keys: after the migrations
    # The children read their Settings from the environment, as this process did; the flags
    # that override it travel the same way. --no-workers picks the other factory instead.
    os.environ["DESKBELL_HOST"] = settings.host
    os.environ["DESKBELL_PORT"] = str(settings.port)
    server = Config(
        APP_WITH_WORKERS if with_workers else APP_WITHOUT_WORKERS,
        factory=True,
        host=settings.host,
        port=settings.port,
        http=HeadLimitedProtocol,
        workers=settings.processes,
        log_config=None,
        access_log=ACCESS_LOG,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        # The supervisor pings each child every 0.5 s and SIGKILLs one that has not answered
        # within this; uvicorn's 5 s can be reached by a healthy child on a saturated host
        # (its in-flight requests would be cut). A dead child is still replaced at once.
        timeout_worker_healthcheck=HEALTHCHECK_SECONDS,
    )
    with _shared_metrics_dir(), listening(settings) as sock:
        log.info("serving", processes=settings.processes, workers=with_workers)
        supervisor = Multiprocess(server, sockets=[sock])
        supervisor.run()
    failed = [p.pid for p in supervisor.processes if p.exitcode == STARTUP_FAILURE]
    if failed:
        raise ServerProcessFailed(
            f"server process {failed[0]} could not start (its error is logged above); "
            "stopped the others"
        )


@contextmanager
def _shared_metrics_dir() -> Iterator[None]:
    """Without PROMETHEUS_MULTIPROC_DIR each child would count alone and `/metrics` would show
    whichever child answered; so give the children a private directory for this run. One the
    operator set (maybe shared with `deskbell worker`s) is used as it is."""
    if os.environ.get(MULTIPROC_ENV):
        yield
        return
    path = tempfile.mkdtemp(prefix="deskbell-metrics-")
    os.environ[MULTIPROC_ENV] = path
    try:
        yield
    finally:
        del os.environ[MULTIPROC_ENV]
        shutil.rmtree(path, ignore_errors=True)
