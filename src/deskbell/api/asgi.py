"""App factories for the child processes of `deskbell serve --processes N`.

uvicorn's supervisor spawns fresh interpreters and hands each an import string, so what a
child needs must be built in the child: its settings (from the environment, which the parent
filled in), its logging, its metrics files and its own runtime (engine, group commit and,
unless --no-workers, a worker pool). The parent has already applied the migrations and
checked the config and the bind rule (`deskbell.serving`).

A factory that raises makes uvicorn respawn the child, forever, each failing the same way;
exiting with uvicorn's STARTUP_FAILURE code instead makes the supervisor stop every child, and
`serve` then exits non-zero.

A child also asks Linux for SIGTERM when its parent dies: a `serve` killed with SIGKILL (the
OOM killer, `kill -9`) would otherwise leave its children serving, holding the port, with
nothing to restart or stop them.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys

import structlog
from fastapi import FastAPI
from uvicorn.config import STARTUP_FAILURE

from deskbell.api.app import create_app
from deskbell.metrics import prepare_multiprocess
from deskbell.observability import configure_logging
from deskbell.serving import settle_heap
from deskbell.settings import Settings
from deskbell.wiring import build_runtime

log = structlog.get_logger(__name__)


def app_with_workers() -> FastAPI:
    """API and delivery workers (`deskbell serve --processes N`)."""
    return _app(with_workers=True)


def app_without_workers() -> FastAPI:
    """API only (`deskbell serve --no-workers --processes N`)."""
    return _app(with_workers=False)


def _app(*, with_workers: bool) -> FastAPI:
    _stop_with_parent()
    try:
        settings = Settings()
        configure_logging(settings.log_format, settings.log_level)
        prepare_multiprocess()  # before build_runtime creates the instruments
        runtime = build_runtime(settings, with_workers=with_workers)
    except Exception as exc:  # any failure here is a failed start, see above
        log.error("server_process_failed", error=f"{type(exc).__name__}: {exc}")
        raise SystemExit(STARTUP_FAILURE) from exc
    app = create_app(runtime)
    settle_heap()
    return app


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _stop_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("parent_death_signal_unavailable", errno=ctypes.get_errno())
        return
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)
