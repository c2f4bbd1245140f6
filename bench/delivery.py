"""Delivery benchmark (issue: delivery you can trust). Prints JSON.

For each setup (`sqlite`: one `deskbell serve` process that also delivers; `sqlite1`, `pg1`,
`pg3`: a `serve --no-workers` API process and 1 or 3 `deskbell worker` processes):
- throughput: N requests are accepted while no worker runs, then the workers start; the
  clock runs from the first delivery `sent` to the last: deliveries per second (the time a
  process takes to start is reported apart, as seconds_to_first_delivery);
- latency: requests at a steady rate with the workers running; for each, the time from its
  accept (the request's `created_at`, stamped by the server just before the commit that the
  202 follows) to the receiver getting the message: p50 and p99. The server's stamp rather
  than the client's: under load the client sees its 202 late, sometimes after the message
  has already arrived.

    .venv/bin/python bench/delivery.py [--requests 3000] [--rate 200] [--seconds 10]
        [--setups sqlite,sqlite1,pg1,pg3] [--channel webhook|slack] [--log-level info]
        [--workers 16]
Defaults are a user's: info-level logs, 16 sends per worker. Each setup also measures the
floor (aiohttp posting like bodies, 16 in flight, one process, on the event loop deskbell
runs on: uvloop) right after its own run, and
reports deliveries per worker process as a ratio of it.
Needs PostgreSQL at DESKBELL_BENCH_POSTGRES_URL (default: the local test server); the
receiver (bench/receiver.py) stands in for Slack and answers at once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson
import sqlalchemy as sa
from common import PG, drop_postgres, free_port, fresh_postgres, wait_http
from uvicorn.loops.auto import auto_loop_factory

from deskbell.models import DeliveryStatus
from deskbell.storage.engine import connect
from deskbell.storage.migrate import upgrade
from deskbell.storage.reads import RequestReads
from deskbell.storage.tables import deliveries

HERE = Path(__file__).parent
# (engine, worker processes); 0: the embedded setup, one `deskbell serve` that also delivers
SETUPS = {
    "sqlite": ("sqlite", 0),
    "sqlite1": ("sqlite", 1),
    "pg1": ("postgresql", 1),
    "pg3": ("postgresql", 3),
}


class Proc:
    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log.open("w")
        self.p = subprocess.Popen(args, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        self.p.terminate()
        try:
            self.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.p.kill()
        self.log.close()


async def sent_count(store: RequestReads) -> int:
    async with store.db.reader.connect() as conn:
        sent = deliveries.c.status == DeliveryStatus.SENT.value
        found = await conn.execute(sa.select(sa.func.count()).where(sent))
        return int(found.scalar_one())


async def post_all(url: str, n: int, start: int, rate: float | None) -> dict[str, str]:
    """POST n requests (at `rate` per second, or as fast as 32 connections go); returns
    {mark: request id} of those answered 202. aiohttp, not httpx: httpcore's pool costs ~2 ms
    of CPU per request at this concurrency, and the generator could not reach 200 req/s."""
    accepted: dict[str, str] = {}
    connector = aiohttp.TCPConnector(limit=32)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as client:

        async def one(i: int) -> None:
            mark = f"req-{start + i:06d}"
            body = {"topic": "sales", "description": mark}
            async with client.post("/v1/assistance-requests", json=body) as r:
                if r.status == 202:
                    accepted[mark] = (await r.json())["id"]

        tasks = []
        t0 = time.monotonic()
        for i in range(n):
            if rate:
                await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    return accepted


async def drain_rate(store: RequestReads, total: int, t0: float) -> tuple[float, float]:
    """(deliveries per second from the first `sent` to the last, seconds from `t0` until the
    first): the rate a running worker sustains, apart from the time its process takes to
    start."""
    first_at, first_count = None, 0
    while (sent := await sent_count(store)) < total:
        if first_at is None and sent > 0:
            first_at, first_count = time.monotonic(), sent
        await asyncio.sleep(0.02)
    end = time.monotonic()
    if first_at is None or end <= first_at:  # all sent between two polls
        return total / (end - t0), end - t0
    return (total - first_count) / (end - first_at), first_at - t0


# The channel under test, as a config block (`--channel`); the receiver answers both.
CHANNELS = {
    "slack": "    type: slack\n    webhook_url: http://127.0.0.1:{port}/hook\n",
    "webhook": (
        "    type: webhook\n    url: http://127.0.0.1:{port}/hook\n"
        "    secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n    allow_private_networks: true\n"
    ),
}
FLOOR_BODY = orjson.dumps(
    {
        "type": "assistance_request.accepted",
        "timestamp": "2026-12-02T00:00:00+00:00",
        "data": {
            "request_id": "01a234ff-0341-768f-be72-3b664fa14086",
            "delivery_id": "01a234ff-0341-768f-be72-3b67b71def8e",
            "channel": "sales",
            "accepted_at": "2026-12-02T00:00:00+00:00",
            "attempt": 1,
            "request": {"topic": "sales", "description": "floor-000000"},
        },
    }
)


async def post_floor(port: int, channel: str, n: int = 3000, in_flight: int = 16) -> float:
    """Posts per second of the HTTP client library alone (aiohttp), `in_flight` at a time,
    bodies like a delivery's, to the same receiver: what one core can post at best."""
    headers = {"Content-Type": "application/json", "webhook-id": "x", "webhook-timestamp": "1"}
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as client:
        gate = asyncio.Semaphore(in_flight)

        async def one() -> None:
            async with gate, client.post("/hook", data=FLOOR_BODY, headers=headers) as r:
                await r.read()

        await asyncio.gather(*(one() for _ in range(200)))  # warm-up: connections open
        t0 = time.monotonic()
        await asyncio.gather(*(one() for _ in range(n)))
        return n / (time.monotonic() - t0)


async def latencies_ms(store: RequestReads, posted: dict[str, str], recv_port: int) -> list[float]:
    """For each posted mark (mark -> request id) the receiver got: accept (the request's
    `created_at`) to receipt, in ms."""
    arrivals = httpx.get(f"http://127.0.0.1:{recv_port}/marks", timeout=10).json()
    latencies = []
    for mark, request_id in posted.items():
        stored = await store.get_request(request_id)
        if stored is not None and mark in arrivals:
            latencies.append((arrivals[mark] - stored.created_at.timestamp()) * 1000)
    return latencies


def percentile(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[q - 1]
        if len(values) > 1
        else values[0]
    )


async def run_setup(
    engine: str, workers: int, args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    pg_name = None
    if engine == "sqlite":
        db_url = f"sqlite+aiosqlite:///{tmp / f'bench-{uuid.uuid4().hex[:6]}.db'}"
    else:
        created = await fresh_postgres()
        if created is None:
            raise RuntimeError(f"PostgreSQL unreachable at {PG}")
        db_url, pg_name = created
    database = connect(db_url)
    await upgrade(database)
    store = RequestReads(database)
    recv_port, api_port = free_port(), free_port()
    config = tmp / "bench.yaml"
    config.write_text(
        "channels:\n  sales:\n"
        + CHANNELS[args.channel].format(port=recv_port)
        + "    max_concurrency: 64\nroutes:\n  - match: {topic: sales}\n    to: [sales]\n"
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DESKBELL_")},
        "DESKBELL_DATABASE_URL": db_url,
        "DESKBELL_CONFIG": str(config),
        "DESKBELL_PORT": str(api_port),
        "DESKBELL_LOG_LEVEL": args.log_level,
        "DESKBELL_WORKERS": str(args.workers),
    }
    deskbell = [sys.executable, "-m", "deskbell"]
    receiver = Proc(
        [sys.executable, str(HERE / "receiver.py"), str(recv_port)], env, tmp / "recv.log"
    )
    api = Proc([*deskbell, "serve", "--no-workers"], env, tmp / "api.log")
    procs = [receiver, api]
    try:
        wait_http(f"http://127.0.0.1:{recv_port}/marks")
        wait_http(f"http://127.0.0.1:{api_port}/healthz")
        url = f"http://127.0.0.1:{api_port}"
        # throughput: a backlog, then the workers
        await post_all(url, args.requests, 0, None)
        t0 = time.monotonic()
        if workers == 0:  # the embedded setup: one process serves and delivers
            api.stop()
            procs.remove(api)
            procs.append(Proc([*deskbell, "serve"], env, tmp / "serve.log"))
            wait_http(f"{url}/healthz")
        else:
            procs += [Proc([*deskbell, "worker"], env, tmp / f"w{i}.log") for i in range(workers)]
        throughput, startup = await drain_rate(store, args.requests, t0)
        # latency: a steady rate with the workers running
        n = int(args.rate * args.seconds)
        posting = time.monotonic()
        accepted = await post_all(url, n, args.requests, args.rate)
        achieved = len(accepted) / (time.monotonic() - posting)
        while await sent_count(store) < args.requests + len(accepted):
            await asyncio.sleep(0.05)
        latencies = await latencies_ms(store, accepted, recv_port)
        floor = await post_floor(recv_port, args.channel)
    finally:
        for proc in reversed(procs):
            proc.stop()
        await database.dispose()
        if pg_name:
            await drop_postgres(pg_name)
    return {
        "engine": engine,
        "channel": args.channel,
        "log_level": args.log_level,
        "worker_processes": workers,
        "deliveries_per_second": round(throughput, 1),
        # the floor: aiohttp (what channels post with) posting a like body, 16 in flight,
        # from this one process, measured right after; per worker process, as a ratio
        "floor_posts_per_second": round(floor, 1),
        "x_floor_per_worker": round(throughput / max(1, workers) / floor, 3),
        "seconds_to_first_delivery": round(startup, 2),
        "latency_rate_per_second": args.rate,
        # what the server accepted: below the asked rate, the API (not delivery) was the limit
        "latency_accepted_per_second": round(achieved, 1),
        "latency_requests": len(accepted),
        "latency_received": len(latencies),
        "p50_ms": round(percentile(latencies, 50), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument(
        "--setups",
        default=",".join(SETUPS),
        help=f"comma-separated subset of {','.join(SETUPS)}",
    )
    parser.add_argument("--channel", choices=sorted(CHANNELS), default="webhook")
    parser.add_argument("--log-level", default="info", help="DESKBELL_LOG_LEVEL (default: info)")
    parser.add_argument("--workers", type=int, default=16, help="DESKBELL_WORKERS per process")
    parser.add_argument("--logs", type=Path, help="keep the processes' logs in this directory")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.setups.split(",") if name.strip()]
    unknown = set(chosen) - set(SETUPS)
    if unknown:
        parser.error(f"unknown setups: {', '.join(sorted(unknown))}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in chosen:
            engine, workers = SETUPS[name]
            where = Path(tmp)
            if args.logs is not None:
                where = args.logs / name
                where.mkdir(parents=True, exist_ok=True)
            results.append(await run_setup(engine, workers, args, where))
    print(
        orjson.dumps(
            {"benchmark": "delivery", "cpus": os.cpu_count(), "results": results},
            option=orjson.OPT_INDENT_2,
        ).decode()
    )


if __name__ == "__main__":
    # The floor posts on the event loop deskbell's servers and workers run on (uvicorn's
    # choice: uvloop where installed), so the ratio compares like with like.
    with asyncio.Runner(loop_factory=auto_loop_factory()) as runner:
        runner.run(main())
