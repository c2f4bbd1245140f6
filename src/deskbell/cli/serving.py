"""The processes `deskbell` runs: `serve` in this process or in N on one port, and `worker`.

One process (`--processes 1`, the default) builds the runtime and the app here and runs
uvicorn on it. Several processes use uvicorn's own supervisor (`uvicorn.supervisors.
Multiprocess`, what `uvicorn --workers N` runs): this process checks everything that can be
checked once (settings, config, the bind rule), applies the migrations, binds the socket and
spawns N children; each child imports `app_with_workers` or `app_without_workers` from here,
builds its own runtime (database engine, group commit, workers) and accepts on the shared
socket. The supervisor replaces a child that dies and, on SIGTERM or SIGINT, stops every child
gracefully before it returns.

Why the supervisor rather than `uvicorn.run(..., workers=N)`: `run` returns normally when a
child fails to start, so `serve` could not tell "stopped by SIGTERM" (exit 0) from "a child
could not start" (exit 2); with the supervisor object in hand the children's exit codes can
be read after it returns.

SIGHUP reads the config file again (live.py): `serve` and `worker` through their runtime's
watcher; the supervisor of `--processes N` itself (`_reloading_supervisor`: uvicorn's would
restart every child), storing the file as the active version, which every child follows.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import gc
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING

import structlog

from deskbell.cli.keys import check_bind
from deskbell.errors import DeskbellError
from deskbell.metrics import MULTIPROC_ENV
from deskbell.observability import batched_lines
from deskbell.settings import Settings
from deskbell.storage.engine import connect
from deskbell.storage.migrate import upgrade

if TYPE_CHECKING:
    from fastapi import FastAPI
    from uvicorn import Config
    from uvicorn.supervisors import Multiprocess

    from deskbell.config.schema import DeskbellConfig

log = structlog.get_logger(__name__)
GRACEFUL_SHUTDOWN_SECONDS = 15
HEALTHCHECK_SECONDS = 30
YOUNG_GENERATION_THRESHOLD = 10_000  # allocations between young collections (default 700)
APP_WITH_WORKERS = "deskbell.cli.serving:app_with_workers"  # each child of --processes N
APP_WITHOUT_WORKERS = "deskbell.cli.serving:app_without_workers"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
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
    metadata): those pauses were the ingest's tail latency (docs/performance.md). Freezing
    moves them out of collection; a larger young generation makes the remaining collections
    rarer. Server and worker processes only: tests build many apps in one process and must
    see their objects collected.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, middle, old)


def serve_here(settings: Settings, *, with_workers: bool, insecure: bool) -> None:
    """One process: API and (unless `with_workers` is false) the delivery workers."""
    import uvicorn

    from deskbell.api.app import create_app
    from deskbell.cli.head_limit import HeadLimitedProtocol
    from deskbell.wiring import build_runtime

    asyncio.run(migrate(settings))
    runtime = build_runtime(settings, with_workers=with_workers)
    log_config_warnings(runtime.active.config)
    check_bind(settings, runtime.active.config, insecure=insecure)
    api = create_app(runtime, batch_log_lines=True)
    settle_heap()
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal; answering that with
    # exit 0 tells a supervisor the stop was clean.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    # SIGHUP: read the config file again (live.py); uvicorn.Server leaves this signal alone.
    signal.signal(signal.SIGHUP, lambda _signum, _frame: runtime.live.request_reload())
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

    from deskbell.channels import build_registry
    from deskbell.cli.head_limit import HeadLimitedProtocol
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
        supervisor = _reloading_supervisor(server, sock, settings)
        supervisor.run()
    failed = [p.pid for p in supervisor.processes if p.exitcode == STARTUP_FAILURE]
    if failed:
        raise ServerProcessFailed(
            f"server process {failed[0]} could not start (its error is logged above); "
            "stopped the others"
        )


def _reloading_supervisor(server: Config, sock: socket.socket, settings: Settings) -> Multiprocess:
    """uvicorn's supervisor, except that SIGHUP reads the config file again (and stores it
    as the active version if it changed: every child follows within seconds) instead of
    restarting every child."""
    from uvicorn.supervisors import Multiprocess

    class Reloading(Multiprocess):
        def handle_hup(self) -> None:
            reload_config(settings)

    return Reloading(server, sockets=[sock])


def reload_config(settings: Settings) -> None:
    """SIGHUP in a process without a runtime (the supervisor of `serve --processes N`):
    the file becomes the active version if it is valid and changed; never raises."""
    from deskbell.channels import build_registry
    from deskbell.live import reload_file
    from deskbell.storage.config_versions import ConfigVersions

    async def run() -> None:
        db = connect(settings.database_url)
        try:
            await reload_file(ConfigVersions(db), settings, build_registry())
        except Exception as exc:  # invalid file or database trouble: keep what runs
            log.error(
                "config_reload_failed",
                reason=f"{exc}"
                if isinstance(exc, DeskbellError)
                else f"{type(exc).__name__}: {exc}",
                message="the config stays as it was",
            )
        finally:
            await db.dispose()

    asyncio.run(run())


def run_worker(settings: Settings) -> None:
    """`deskbell worker`: delivery workers only, until SIGTERM or SIGINT."""
    from uvicorn.loops.auto import auto_loop_factory

    from deskbell.wiring import build_runtime

    asyncio.run(migrate(settings))
    runtime = build_runtime(settings, with_workers=True)
    log_config_warnings(runtime.active.config)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, runtime.live.request_reload)
        # As a server's loop does: a turn's lines (a delivery_attempt line per send) in one write.
        with batched_lines(loop):
            await runtime.live.start()
            runtime.start_workers()
            await stop.wait()
            await runtime.aclose()

    settle_heap()  # as for servers: full collections over the startup heap stall sends
    # The loop `serve` runs on (uvicorn's choice: uvloop where it is installed), so a separate
    # worker sends as fast as an embedded one.
    with asyncio.Runner(loop_factory=auto_loop_factory()) as runner:
        runner.run(run())


def app_with_workers() -> FastAPI:
    """A child of `serve --processes N`: API and delivery workers."""
    return _child_app(with_workers=True)


def app_without_workers() -> FastAPI:
    """A child of `serve --no-workers --processes N`: API only."""
    return _child_app(with_workers=False)


def _child_app(*, with_workers: bool) -> FastAPI:
    """Build in the child what it needs: settings (from the environment the parent filled in),
    logging, metrics files and its own runtime; the parent has applied the migrations and
    checked the config and the bind rule. A factory that raises makes uvicorn respawn the
    child forever, each failing the same way; exiting with STARTUP_FAILURE instead makes the
    supervisor stop every child, and `serve` then exits non-zero."""
    from uvicorn.config import STARTUP_FAILURE

    from deskbell.api.app import create_app
    from deskbell.metrics import prepare_multiprocess
    from deskbell.observability import configure_logging
    from deskbell.wiring import build_runtime

    _stop_with_parent()
    try:
        settings = Settings()
        configure_logging(settings.log_format, settings.log_level)
        prepare_multiprocess()  # before build_runtime creates the instruments
        runtime = build_runtime(settings, with_workers=with_workers)
    except Exception as exc:  # any failure here is a failed start, see above
        log.error("server_process_failed", error=f"{type(exc).__name__}: {exc}")
        raise SystemExit(STARTUP_FAILURE) from exc
    app = create_app(runtime, batch_log_lines=True)
    settle_heap()
    return app


def _stop_with_parent() -> None:
    """Ask Linux for SIGTERM when the parent dies: a `serve` killed with SIGKILL (the OOM
    killer, `kill -9`) would otherwise leave its children serving, holding the port, with
    nothing to restart or stop them."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("parent_death_signal_unavailable", errno=ctypes.get_errno())
        return
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


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
