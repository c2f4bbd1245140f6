"""What the benchmarks share: free ports, waiting for a server, wrk's report, a throwaway
PostgreSQL database."""

from __future__ import annotations

import os
import re
import socket
import time
import uuid
from typing import Any

import asyncpg
import httpx
from sqlalchemy.engine import make_url

PG = os.environ.get(
    "DESKBELL_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


def parse_wrk(out: str) -> dict[str, Any]:
    """wrk's `--latency` report: req/s, p50 and p99 (ms), requests, non-2xx answers (`errors`)
    and socket errors."""

    def ms(label: str) -> float:
        m = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out)
        if not m:
            return float("nan")
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": ms("50"),
        "p99_ms": ms("99"),
        "requests": total,
        "errors": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": socket_errors.group(1).strip() if socket_errors else None,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 30) -> None:
    """Until `url` answers anything below 500."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def _admin_dsn() -> str:
    return make_url(PG).set(drivername="postgresql").render_as_string(hide_password=False)


async def fresh_postgres() -> tuple[str, str] | None:
    """(URL, name) of a new empty database, or None when PostgreSQL is unreachable."""
    name = f"deskbell_bench_{uuid.uuid4().hex[:8]}"
    try:
        admin = await asyncpg.connect(_admin_dsn())
    except (OSError, asyncpg.PostgresError):
        return None
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    return make_url(PG).set(database=name).render_as_string(hide_password=False), name


async def drop_postgres(name: str) -> None:
    admin = await asyncpg.connect(_admin_dsn())
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()
