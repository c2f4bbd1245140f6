"""Scale-out benchmark on PostgreSQL (issue 20): A API processes + W worker processes, for
each topology asked (default 1+1 and 2+3), in one run. Prints JSON.

Each topology gets a fresh database, A `deskbell serve --no-workers` on their own ports,
W `deskbell worker`, and one receiver (bench/receiver.py) standing in for the channel. All
at a user's defaults: info logs, 16 sends per worker process. Nothing is pinned to a core.
1. ingest under full load with the workers running: wrk (1 thread each, 64 connections in
   all, one wrk per API port, run at once) for --seconds: accepted req/s (2xx), wrk's p99
   (the worst of the wrks'), deliveries sent per second over the same window, and the drain
   rate: deliveries per second from wrk's start until every accepted request is sent;
   meanwhile, every 0.5 s: CPU time of each process (API, workers, receiver, this script,
   the `postgres` processes but other databases' backends; wrk's from its rusage) from /proc,
   the machine's idle share from /proc/stat, the busiest processes that are none of these
   (the machine may be shared), and the bench database's backends in pg_stat_activity by
   state and wait event;
2. latency at a steady --rate (spread over the API ports) for --seconds: accept (the
   request's created_at) to the receiver getting it, p50 and p99, as bench/delivery.py;
3. loss: every request the database holds has a `sent` delivery, and it holds every one
   answered 2xx (wrk may stop counting a request in flight at its deadline that was stored).

    .venv/bin/python bench/scaleout.py [--seconds 10] [--rate 300] [--topologies 1+1,2+3]
        [--channel webhook|slack] [--logs DIR]
Needs wrk and PostgreSQL at DESKBELL_BENCH_POSTGRES_URL (default: the local test server).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from common import PG, drop_postgres, free_port, fresh_postgres, parse_wrk, wait_http
from delivery import CHANNELS, Proc, latencies_ms, percentile, post_all
from ingest import LUA
from sqlalchemy.engine import make_url

from deskbell.storage.engine import connect
from deskbell.storage.migrate import upgrade
from deskbell.storage.reads import RequestReads

HERE = Path(__file__).parent
TICK = os.sysconf("SC_CLK_TCK")
CONNECTIONS = 64  # in all, split between the API ports
SAMPLE_EVERY = 0.5
DRAIN_TIMEOUT = 600.0


def dsn(url: str) -> str:
    """asyncpg's form of a SQLAlchemy URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def accepted_of(out: str) -> dict[str, Any]:
    """wrk's report (bench/common.py) as this benchmark counts it: 2xx answers apart."""
    found = parse_wrk(out)
    return {
        "requests": found["requests"],
        "accepted": found["requests"] - found["errors"],
        "non_2xx": found["errors"],
        "p50_ms": found["p50_ms"],
        "p99_ms": found["p99_ms"],
        "socket_errors": found["socket_errors"],
    }


def run_wrk(
    port: int, seconds: float, connections: int, script: Path, pids: set[int]
) -> dict[str, Any]:
    """One wrk run, parsed, plus its CPU time (from wait4's rusage: exact, where sampling
    /proc would miss what it used after the last sample before it exited)."""
    wrk = subprocess.Popen(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
         "-s", str(script), f"http://127.0.0.1:{port}/v1/assistance-requests"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert wrk.stdout is not None
    pids.add(wrk.pid)
    out = wrk.stdout.read()
    _, status, usage = os.wait4(wrk.pid, 0)
    wrk.returncode = os.waitstatus_to_exitcode(status)
    wrk.stdout.close()
    if wrk.returncode != 0:
        raise RuntimeError(f"wrk exited {wrk.returncode}: {out}")
    return {**accepted_of(out), "cpu_seconds": usage.ru_utime + usage.ru_stime}


def processes() -> dict[int, tuple[str, int]]:
    """{pid: (comm, utime + stime of all its threads)} of every process running."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # it ended
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            found[int(entry.name)] = (comm, int(fields[11]) + int(fields[12]))
    return found


def machine_ticks() -> tuple[int, int, int]:
    """(total, idle + iowait, steal) of the `cpu` line of /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields[:8]), fields[3] + fields[4], fields[7]


class Sampler:
    """CPU ticks per process and group, the machine's idle share, and the bench database's
    backends by wait event, every SAMPLE_EVERY seconds until stopped."""

    def __init__(self, groups: dict[str, list[int]], db_name: str) -> None:
        self.groups = groups  # name: pids; "postgres" is found anew at each sample
        self.db_name = db_name
        self.last: dict[int, int] = {}
        self.used: Counter[int] = Counter()  # ticks per pid over the phase
        self.pg_used = 0
        self.other: Counter[str] = Counter()  # ticks of any other process, by name[pid]
        self.foreign: set[int] = set()  # backends of other databases (other work on the server)
        self.skip: set[int] = set()  # counted apart (wrk: from its rusage)
        self.waits: Counter[str] = Counter()
        self.samples = 0
        self.stop = asyncio.Event()

    def _cpu(self, first: bool) -> None:
        mine = {p for pids in self.groups.values() for p in pids}
        for pid, (comm, ticks) in processes().items():
            # a process first seen after the start began during the phase: all its time counts
            used = ticks - self.last.get(pid, ticks if first else 0)
            self.last[pid] = ticks
            if pid in self.skip:
                continue
            if pid in mine:
                self.used[pid] += used
            elif comm == "postgres" and pid in self.foreign:
                self.other["postgres (other databases)"] += used
            elif comm == "postgres":
                self.pg_used += used
            else:
                self.other[f"{comm}[{pid}]"] += used

    async def _waits(self, admin: Any) -> None:
        rows = await admin.fetch(
            "SELECT pid, datname, state, wait_event_type, wait_event FROM pg_stat_activity"
            " WHERE pid <> pg_backend_pid()"
        )
        self.foreign = {r["pid"] for r in rows if r["datname"] not in (None, self.db_name)}
        for row in rows:
            if row["datname"] != self.db_name:
                continue
            if row["state"] != "active":
                self.waits[row["state"] or "unknown"] += 1
            elif row["wait_event_type"]:
                self.waits[f"active:{row['wait_event_type']}:{row['wait_event']}"] += 1
            else:
                self.waits["active:running"] += 1

    async def begin(self, admin: Any) -> None:
        await self._waits(admin)
        self.waits.clear()
        self._cpu(first=True)
        self.t0, self.m0 = time.monotonic(), machine_ticks()

    async def run(self, admin: Any) -> None:
        """From `begin` until `stop` is set; `admin`: a connection to another database."""
        due = self.t0
        while True:
            due += SAMPLE_EVERY
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), max(0.0, due - time.monotonic()))
            self._cpu(first=False)
            if self.stop.is_set():
                break
            await self._waits(admin)
            self.samples += 1
        self.t1, self.m1 = time.monotonic(), machine_ticks()

    def report(self) -> dict[str, Any]:
        wall = self.t1 - self.t0

        def pct(ticks: int) -> float:
            return round(ticks / TICK / wall * 100, 1)

        cpu: dict[str, Any] = {}
        for name, pids in self.groups.items():
            each = [pct(self.used[p]) for p in pids]
            cpu[name] = {"total": round(sum(each), 1), "each": each} if len(pids) > 1 else each[0]
        cpu["postgres"] = pct(self.pg_used)
        total = self.m1[0] - self.m0[0]
        idle = (self.m1[1] - self.m0[1]) / total
        return {
            "seconds": round(wall, 2),
            "cpu_pct_of_a_core": cpu,
            "machine_idle_pct": round(idle * 100, 1),
            # the machine's busy time less every process above: whatever else ran
            "busy_pct_of_a_core": round((1 - idle) * (os.cpu_count() or 1) * 100, 1),
            "machine_steal_pct": round((self.m1[2] - self.m0[2]) / total * 100, 1),
            # the busiest processes that are not this benchmark's (other work on the machine)
            "others_pct_of_a_core": {k: pct(v) for k, v in self.other.most_common(3) if v},
            "pg_samples": self.samples,
            "pg_backends": dict(self.waits.most_common()),
        }


def saturated(sampled: dict[str, Any]) -> str:
    """What the samples say ran out first, in a line."""
    idle = sampled["machine_idle_pct"]
    cpus = os.cpu_count() or 1
    processes = []  # (pct, name)
    for name, value in sampled["cpu_pct_of_a_core"].items():
        if isinstance(value, dict):
            processes += [(v, f"{name}[{i}]") for i, v in enumerate(value["each"])]
        elif name != "postgres":
            processes.append((value, name))
    busiest = max(processes)
    groups = sorted(
        (
            (v["total"] if isinstance(v, dict) else v, name)
            for name, v in sampled["cpu_pct_of_a_core"].items()
        ),
        reverse=True,
    )
    head = f"machine CPU (idle {idle}%)" if idle < 10 else f"not the machine's CPU (idle {idle}%)"
    share = ", ".join(f"{name} {v}%" for v, name in groups[:3])
    parts = [head, f"busiest process: {busiest[1]} {busiest[0]}% of a core"]
    if idle >= 10 and busiest[0] >= 90:
        parts[0] = f"one process's CPU: {busiest[1]} {busiest[0]}% of a core (idle {idle}%)"
        parts.pop()
    parts.append(f"by group ({cpus} cores = {cpus * 100}%): {share}")
    if sampled.get("other_pct_of_a_core", 0) >= 20:
        parts.append(f"not this benchmark's processes: {sampled['other_pct_of_a_core']}%")
    backends = sampled["pg_backends"]
    active = sum(n for k, n in backends.items() if k.startswith("active"))
    locks = sum(n for k, n in backends.items() if k.startswith(("active:Lock", "active:LWLock")))
    parts.append(f"pg: {active} active backend samples, {locks} waiting on locks")
    return "; ".join(parts)


async def count(conn: Any, query: str) -> int:
    return int(await conn.fetchval(query))


SENT = "SELECT count(*) FROM deliveries WHERE status = 'sent'"
STORED = "SELECT count(*) FROM requests"
UNSENT = (
    "SELECT count(*) FROM requests r WHERE NOT EXISTS (SELECT 1 FROM deliveries d"
    " WHERE d.request_id = r.id AND d.status = 'sent')"
)


async def wait_sent(conn: Any, timeout: float = DRAIN_TIMEOUT) -> tuple[int, float]:
    """Until every stored request's delivery is sent (or `timeout`): (sent, monotonic time the
    count last rose)."""
    deadline = time.monotonic() + timeout
    sent, last_rise = await count(conn, SENT), time.monotonic()
    while sent < await count(conn, STORED) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        now = await count(conn, SENT)
        if now > sent:
            sent, last_rise = now, time.monotonic()
    return sent, last_rise


async def wait_logs(logs: list[Path], line: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not all(line in log.read_text() for log in logs):
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {line!r} in each of {[str(p) for p in logs]}")
        await asyncio.sleep(0.1)


def stop_all(procs: list[Proc]) -> None:
    """Each: terminate, wait, kill after 30 s (Proc.stop)."""
    for proc in reversed(procs):
        proc.stop()


async def run_topology(
    apis: int, workers: int, args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    created = await fresh_postgres()
    if created is None:
        raise RuntimeError(f"PostgreSQL unreachable at {PG}")
    db_url, pg_name = created
    database = connect(db_url)
    store = RequestReads(database)
    stack = contextlib.AsyncExitStack()
    stack.push_async_callback(drop_postgres, pg_name)
    stack.push_async_callback(database.dispose)
    recv_port = free_port()
    ports = [free_port() for _ in range(apis)]
    config = tmp / "bench.yaml"
    config.write_text(
        "channels:\n  sales:\n"
        + CHANNELS[args.channel].format(port=recv_port)
        + "    max_concurrency: 64\nroutes:\n  - match: {topic: sales}\n    to: [sales]\n"
    )
    env = {  # a user's defaults: no DESKBELL_LOG_LEVEL, no DESKBELL_WORKERS
        **{k: v for k, v in os.environ.items() if not k.startswith("DESKBELL_")},
        "DESKBELL_DATABASE_URL": db_url,
        "DESKBELL_CONFIG": str(config),
    }
    deskbell = [sys.executable, "-m", "deskbell"]
    script = tmp / "post.lua"
    script.write_text(LUA)
    procs: list[Proc] = []
    async with stack:
        await upgrade(database)
        conn = await asyncpg.connect(dsn(db_url))
        stack.push_async_callback(conn.close)
        admin = await asyncpg.connect(dsn(PG))  # the sampler's, outside the bench database
        stack.push_async_callback(admin.close)
        stack.callback(stop_all, procs)
        receiver = Proc(
            [sys.executable, str(HERE / "receiver.py"), str(recv_port)], env, tmp / "recv.log"
        )
        procs.append(receiver)
        api = [
            Proc(
                [*deskbell, "serve", "--no-workers"],
                {**env, "DESKBELL_PORT": str(port)},
                tmp / f"api{i}.log",
            )
            for i, port in enumerate(ports)
        ]
        procs += api
        worker_logs = [tmp / f"w{i}.log" for i in range(workers)]
        work = [Proc([*deskbell, "worker"], env, log) for log in worker_logs]
        procs += work
        wait_http(f"http://127.0.0.1:{recv_port}/marks")
        for port in ports:
            wait_http(f"http://127.0.0.1:{port}/healthz")
        await wait_logs(worker_logs, "worker_started")

        # 1. ingest under full load, workers running, sampled
        split = [CONNECTIONS // apis + (i < CONNECTIONS % apis) for i in range(apis)]
        quiet = machine_ticks()  # how busy the machine is before the load: other work
        await asyncio.sleep(1)
        after = machine_ticks()
        idle_before = (after[1] - quiet[1]) / max(1, after[0] - quiet[0]) * 100
        sent_before = await count(conn, SENT)
        sampler = Sampler(
            {
                "api": [p.p.pid for p in api],
                "workers": [p.p.pid for p in work],
                "receiver": [receiver.p.pid],
                "bench": [os.getpid()],  # this script: its polls and samples
            },
            pg_name,
        )
        await sampler.begin(admin)
        sampling = asyncio.create_task(sampler.run(admin))
        t0 = time.monotonic()
        results = await asyncio.gather(
            *(
                asyncio.to_thread(run_wrk, port, args.seconds, c, script, sampler.skip)
                for port, c in zip(ports, split, strict=True)
            )
        )
        t_wrk = time.monotonic()
        sent_window = await count(conn, SENT)
        sampler.stop.set()
        await sampling
        accepted = sum(r["accepted"] for r in results)
        sent_after, last_sent = await wait_sent(conn)
        stored = await count(conn, STORED)
        sampled = sampler.report()
        wrk_cpu = sum(r["cpu_seconds"] for r in results)
        sampled["cpu_pct_of_a_core"]["wrk"] = round(wrk_cpu / sampled["seconds"] * 100, 1)
        sampled["other_pct_of_a_core"] = round(
            sampled["busy_pct_of_a_core"]
            - sum(
                v["total"] if isinstance(v, dict) else v
                for v in sampled["cpu_pct_of_a_core"].values()
            ),
            1,
        )

        # 2. latency at a steady rate
        n = int(args.rate * args.seconds)
        per_port = [n // apis + (i < n % apis) for i in range(apis)]
        posting = time.monotonic()
        marks = await asyncio.gather(
            *(
                post_all(f"http://127.0.0.1:{port}", k, i * 100_000, args.rate / apis)
                for i, (port, k) in enumerate(zip(ports, per_port, strict=True))
            )
        )
        achieved_for = time.monotonic() - posting
        posted = {mark: rid for found in marks for mark, rid in found.items()}
        await wait_sent(conn)
        latencies = await latencies_ms(store, posted, recv_port)

        # 3. loss over both phases
        unsent = await count(conn, UNSENT)
        stored_all = await count(conn, STORED)
        accepted_all = accepted + len(posted)
        statuses = dict(
            (r["status"], r["n"])
            for r in await conn.fetch(
                "SELECT status, count(*) AS n FROM deliveries GROUP BY status"
            )
        )
    wrk_seconds = t_wrk - t0
    return {
        "api": apis,
        "workers": workers,
        "ingest": {
            "seconds": round(wrk_seconds, 2),
            "connections": split,
            "accepted_per_second": round(accepted / wrk_seconds, 1),
            "p99_ms": max(r["p99_ms"] for r in results),
            "p50_ms": max(r["p50_ms"] for r in results),
            "accepted": accepted,
            "non_2xx": sum(r["non_2xx"] for r in results),
            "socket_errors": [r["socket_errors"] for r in results if r["socket_errors"]],
            "stored": stored,
            "sent_per_second_during": round((sent_window - sent_before) / wrk_seconds, 1),
            "drain_per_second": round((sent_after - sent_before) / (last_sent - t0), 1),
            "seconds_to_last_sent": round(last_sent - t0, 2),
        },
        "machine_idle_pct_before": round(idle_before, 1),
        "sampled_during_ingest": sampled,
        "saturated": saturated(sampled),
        "latency": {
            "rate_per_second": args.rate,
            "accepted_per_second": round(len(posted) / achieved_for, 1),
            "requests": len(posted),
            "received": len(latencies),
            "p50_ms": round(percentile(latencies, 50), 1) if latencies else None,
            "p99_ms": round(percentile(latencies, 99), 1) if latencies else None,
        },
        "accepted_2xx": accepted_all,
        "stored": stored_all,
        "deliveries": statuses,
        # a stored request without a sent delivery, or a 2xx the database does not hold
        "lost": unsent + max(0, accepted_all - stored_all),
    }


def topology(text: str) -> tuple[int, int]:
    apis, _, workers = text.strip().partition("+")
    return int(apis), int(workers)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10, help="of each phase")
    parser.add_argument("--rate", type=float, default=300, help="req/s of the latency phase")
    parser.add_argument("--topologies", default="1+1,2+3", help="APIs+workers, comma-separated")
    parser.add_argument("--channel", choices=sorted(CHANNELS), default="webhook")
    parser.add_argument("--logs", type=Path, help="keep the processes' logs in this directory")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: apt-get install -y wrk")
    try:
        chosen = [topology(t) for t in args.topologies.split(",") if t.strip()]
    except ValueError:
        parser.error("--topologies: like 1+1,2+3")
    results = []
    with tempfile.TemporaryDirectory() as name:
        for apis, workers in chosen:
            where = Path(name) / f"{apis}+{workers}"
            if args.logs is not None:
                where = args.logs / f"{apis}+{workers}"
            where.mkdir(parents=True, exist_ok=True)
            results.append(await run_topology(apis, workers, args, where))
    settings = {
        "engine": "postgresql",
        "channel": args.channel,
        "seconds": args.seconds,
        "rate": args.rate,
        "connections": CONNECTIONS,
        "log_level": "defaults (info)",
        "workers_per_process": "defaults (16)",
        "cpus": os.cpu_count(),
        "sample_every_seconds": SAMPLE_EVERY,
    }
    print(
        orjson.dumps(
            {"benchmark": "scaleout", "settings": settings, "topologies": results},
            option=orjson.OPT_INDENT_2,
        ).decode()
    )


if __name__ == "__main__":
    asyncio.run(main())
