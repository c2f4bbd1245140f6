"""Ingest benchmark (issue: performance). Prints JSON.

In one run, each server pinned to core 0 and wrk (1 thread, 64 connections) to core 1:
- floor: a raw ASGI app answering 202 (bench/floor_app.py), uvicorn + uvloop + httptools;
- deskbell: `deskbell serve --no-workers` on SQLite (and on PostgreSQL when reachable);
  the floor and deskbell on SQLite both stay up while wrk alternates between them for
  `--rounds` rounds of `--seconds` each, and the ratio reported is the median of the rounds'
  ratios: this VM's speed drifts by a third, and at times halves, within a minute, so one
  floor run and one deskbell run a minute apart (or just a server start apart) can differ by
  that much for no reason of theirs;
- naive: FastAPI + pydantic + an aiosqlite commit per request (bench/naive_app.py);
- deskbell with `serve --no-workers --processes 2` on SQLite, pinned to cores 0-1: wrk on
  core 1 then shares a core with one server process, so this figure understates what two
  processes do on a machine with a core to spare for the load generator.
After the deskbell runs it checks that every 2xx wrk counted is a row in the database.
Each run also reports the server's CPU time per request (user and system, all its threads,
from /proc): steadier than req/s when the machine is noisy.

deskbell runs at its defaults (info logs in the console format, one line per request)
unless `--log-level` or `--log-format` say otherwise; `--rounds-only` skips the naive,
PostgreSQL and 2-process servers.

    .venv/bin/python bench/ingest.py [--seconds 2] [--rounds 21] [--warmup 3] [--single-seconds 8]
                                     [--log-level warning] [--log-format json] [--rounds-only]
Needs wrk (Debian: apt-get install wrk) and taskset (util-linux).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from common import drop_postgres, free_port, fresh_postgres, parse_wrk, wait_http

from deskbell.storage.engine import connect
from deskbell.storage.tables import requests

HERE = Path(__file__).parent
BODY = orjson.dumps({"topic": "sales", "description": "Wants a quote for 40 seats"}).decode()
LUA = f"""wrk.method = "POST"
wrk.body = '{BODY}'
wrk.headers["Content-Type"] = "application/json"
"""
UVICORN = ["-m", "uvicorn", "--loop", "uvloop", "--http", "httptools", "--no-access-log",
           "--log-level", "warning"]  # fmt: skip


TICK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> tuple[int, int]:
    """(user, system) clock ticks used so far by every thread of `pid`."""
    user = system = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        user, system = user + int(fields[11]), system + int(fields[12])
    return user, system


def measured_wrk(
    pid: int, port: int, seconds: int, connections: int, script: Path
) -> dict[str, Any]:
    """`wrk`, plus the server's CPU per request in microseconds while it ran."""
    user, system = cpu_ticks(pid)
    result = wrk(port, seconds, connections, script)
    user_after, system_after = cpu_ticks(pid)
    per_request = 1e6 / TICK / max(1, result["requests"])
    result["cpu_us_per_request"] = {
        "user": round((user_after - user) * per_request, 1),
        "system": round((system_after - system) * per_request, 1),
    }
    return result


def wrk(port: int, seconds: int, connections: int, script: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
         "-s", str(script), f"http://127.0.0.1:{port}/v1/assistance-requests"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return parse_wrk(out)


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("w") as out:
        return subprocess.Popen(["taskset", "-c", "0", *args], env=env, stdout=out, stderr=out)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


async def rows(url: str) -> int:
    db = connect(url)
    try:
        async with db.reader.connect() as conn:
            return int(
                (await conn.execute(sa.select(sa.func.count()).select_from(requests))).scalar_one()
            )
    finally:
        await db.dispose()


LOG_LEVEL: str | None = None  # None: deskbell's defaults (info); set by --log-level
LOG_FORMAT: str | None = None  # None: deskbell's default (console); set by --log-format


def deskbell_env(base: Mapping[str, str], url: str, port: int, tmp: Path) -> dict[str, str]:
    """`base` without DESKBELL_ settings, plus those of a deskbell on `url` and `port` that
    routes the benchmark's topic to a console channel; the log level and format are
    deskbell's defaults unless `--log-level` and `--log-format` name others."""
    config = tmp / "bench.yaml"
    config.write_text(
        "channels:\n  c: {type: console}\nroutes:\n  - match: {topic: sales}\n    to: [c]\n"
    )
    return {
        **{k: v for k, v in base.items() if not k.startswith("DESKBELL_")},
        "DESKBELL_DATABASE_URL": url,
        "DESKBELL_CONFIG": str(config),
        "DESKBELL_PORT": str(port),
        **({"DESKBELL_LOG_LEVEL": LOG_LEVEL} if LOG_LEVEL else {}),
        **({"DESKBELL_LOG_FORMAT": LOG_FORMAT} if LOG_FORMAT else {}),
    }


async def run_deskbell(
    url: str, args: argparse.Namespace, tmp: Path, script: Path
) -> dict[str, Any]:
    port = free_port()
    env = deskbell_env(os.environ, url, port, tmp)
    server = start([sys.executable, "-m", "deskbell", "serve", "--no-workers"], env, tmp / "d.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        result = measured_wrk(server.pid, port, args.seconds, args.connections, script)
    finally:
        stop(server)
    stored = await rows(url)
    accepted = result["requests"] - result["errors"]
    # wrk stops counting at the deadline; requests it sent but did not count may be stored too
    result["stored"] = stored
    result["all_202_stored"] = accepted <= stored <= accepted + args.connections
    return result


async def alternate_rounds(
    url: str, env: dict[str, str], args: argparse.Namespace, tmp: Path, script: Path
) -> list[tuple[float, dict[str, Any], dict[str, Any]]]:
    """(ratio, floor, deskbell) of each round: wrk on the floor, then on deskbell on SQLite,
    both servers up and pinned to core 0 throughout (the idle one uses no CPU). Every round's
    deskbell figures carry the storage check of the whole run."""
    floor_port, port = free_port(), free_port()
    floor_server = start([sys.executable, *UVICORN, "--app-dir", str(HERE), "--port",
                          str(floor_port), "floor_app:app"], env, tmp / "floor.log")  # fmt: skip
    server_env = deskbell_env(env, url, port, tmp)
    server = start([sys.executable, "-m", "deskbell", "serve", "--no-workers"], server_env,
                   tmp / "d.log")  # fmt: skip
    rounds = []
    try:
        wait_http(f"http://127.0.0.1:{floor_port}/")
        wait_http(f"http://127.0.0.1:{port}/healthz")
        # Not counted: a fresh server and database are slower for their first seconds (the WAL
        # file grows to its working size, every batch size is prepared once), and a service
        # runs for days.
        wrk(floor_port, args.warmup, args.connections, script)
        warmup = wrk(port, args.warmup, args.connections, script)
        for _ in range(args.rounds):
            floor = measured_wrk(floor_server.pid, floor_port, args.seconds, args.connections,
                                 script)  # fmt: skip
            sqlite = measured_wrk(server.pid, port, args.seconds, args.connections, script)
            rounds.append((sqlite["rps"] / floor["rps"], floor, sqlite))
    finally:
        stop(server)
        stop(floor_server)
    stored = await rows(url)
    runs = [warmup, *(d for _, _, d in rounds)]
    accepted = sum(d["requests"] - d["errors"] for d in runs)
    for sqlite in runs:  # wrk may stop counting requests that were then stored
        sqlite["stored_in_run"] = stored
        sqlite["all_202_stored"] = accepted <= stored <= accepted + args.connections * len(runs)
    return rounds


PROCESS_CPUS = "0-1"  # both cores: wrk (core 1) shares one with a server process


def start_on(cpus: str, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Like `start`, pinned to `cpus` (a taskset list) instead of core 0."""
    with log.open("w") as out:
        return subprocess.Popen(["taskset", "-c", cpus, *args], env=env, stdout=out, stderr=out)


def wait_files(directory: Path, pattern: str, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(list(directory.glob(pattern))) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"fewer than {count} {pattern} in {directory} after {timeout}s")
        time.sleep(0.1)


async def run_deskbell_processes(
    url: str, args: argparse.Namespace, tmp: Path, script: Path, processes: int = 2
) -> dict[str, Any]:
    """`serve --no-workers --processes N`, checked like `run_deskbell`."""
    port = free_port()
    metrics = tmp / f"metrics-{port}"
    metrics.mkdir()
    env = {
        **deskbell_env(os.environ, url, port, tmp),
        # serve would make one itself; named here so the bench sees every process start
        "PROMETHEUS_MULTIPROC_DIR": str(metrics),
    }
    command = [sys.executable, "-m", "deskbell", "serve", "--no-workers",
               "--processes", str(processes)]  # fmt: skip
    server = start_on(PROCESS_CPUS, command, env, tmp / "dp.log")
    try:
        # each process writes its counter file while building its runtime, just before it
        # accepts: wait for all of them, so wrk does not start against one process
        wait_files(metrics, "counter_*.db", processes)
        wait_http(f"http://127.0.0.1:{port}/healthz")
        result = wrk(port, args.seconds, args.connections, script)
    finally:
        stop(server)
    stored = await rows(url)
    accepted = result["requests"] - result["errors"]
    result["stored"] = stored
    result["all_202_stored"] = accepted <= stored <= accepted + args.connections
    result["processes"] = processes
    result["server_cpus"] = PROCESS_CPUS
    result["wrk_cpus"] = "1"
    return result


def run_plain(
    app: str, env: dict[str, str], args: argparse.Namespace, tmp: Path, script: Path
) -> dict[str, Any]:
    port = free_port()
    server = start([sys.executable, *UVICORN, "--app-dir", str(HERE), "--port", str(port), app],
                   env, tmp / f"{app.split(':')[0]}.log")  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/")
        return measured_wrk(server.pid, port, args.seconds, args.connections, script)
    finally:
        stop(server)


P99_TARGET_MS = 30.0  # the target for ingest at the defaults


def p99_spread(p99s: list[float]) -> dict[str, Any]:
    """The rounds' p99 figures: their median, the worst, and how many missed the target.
    One round's p99 (the median-ratio round's) is 2 s of traffic, and a stall of the VM
    lands in whichever round it happens to."""
    ordered = sorted(p99s)
    return {
        "median": ordered[len(ordered) // 2],
        "max": ordered[-1],
        f"rounds_over_{P99_TARGET_MS:g}_ms": sum(p > P99_TARGET_MS for p in ordered),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=2, help="per wrk run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=3, help="seconds of load not counted")
    parser.add_argument(
        "--single-seconds", type=int, default=8, help="each run of naive, PostgreSQL, 2 processes"
    )
    parser.add_argument("--rounds", type=int, default=21, help="floor/deskbell SQLite pairs")
    parser.add_argument(
        "--log-level", default=None, help="deskbell's DESKBELL_LOG_LEVEL (default: its defaults)"
    )
    parser.add_argument(
        "--log-format", default=None, help="deskbell's DESKBELL_LOG_FORMAT (default: console)"
    )
    parser.add_argument(
        "--rounds-only", action="store_true", help="only the floor/SQLite rounds, no other servers"
    )
    args = parser.parse_args()
    global LOG_LEVEL, LOG_FORMAT
    LOG_LEVEL, LOG_FORMAT = args.log_level, args.log_format
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: apt-get install -y wrk")
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        script = tmp / "post.lua"
        script.write_text(LUA)
        env = {**os.environ, "NAIVE_DB": str(tmp / "naive.db")}
        url = f"sqlite+aiosqlite:///{tmp / 'bench.db'}"
        rounds = await alternate_rounds(url, env, args, tmp, script)
        rounds.sort(key=lambda r: r[0])
        ratio, floor, sqlite = rounds[len(rounds) // 2]  # the median round
        single = argparse.Namespace(**{**vars(args), "seconds": args.single_seconds})
        naive = processes_2 = postgres = None
        if not args.rounds_only:
            naive = run_plain("naive_app:app", env, single, tmp, script)
            processes_2 = await run_deskbell_processes(
                f"sqlite+aiosqlite:///{tmp / 'bench-processes.db'}", single, tmp, script
            )
        pg = None if args.rounds_only else await fresh_postgres()
        if pg is not None:
            try:
                postgres = await run_deskbell(pg[0], single, tmp, script)
            finally:
                await drop_postgres(pg[1])
    print(orjson.dumps({
        "benchmark": "ingest",
        "log_level": LOG_LEVEL or "defaults (info)",
        "log_format": LOG_FORMAT or "defaults (console)",
        "cpus": os.cpu_count(),
        "connections": args.connections,
        "seconds": args.seconds,
        "single_seconds": args.single_seconds,
        "rounds": args.rounds,
        "warmup_seconds": args.warmup,
        "floor_rps": floor["rps"],
        "deskbell_rps": sqlite["rps"],
        "ratio": round(ratio, 3),  # the median round's; all rounds in "ratios"
        "ratios": [round(r, 3) for r, _, _ in rounds],
        # all rounds together: deskbell's requests over the floor's, in the same seconds
        "ratio_overall": round(
            sum(d["requests"] for _, _, d in rounds) / sum(f["requests"] for _, f, _ in rounds), 3
        ),
        "all_rounds": [{"floor": f, "deskbell_sqlite": d} for _, f, d in rounds],
        "p50_ms": sqlite["p50_ms"],
        "p99_ms": sqlite["p99_ms"],  # the median round's; every round's below
        "p99_ms_rounds": p99_spread([d["p99_ms"] for _, _, d in rounds]),
        "floor_p99_ms_rounds": p99_spread([f["p99_ms"] for _, f, _ in rounds]),
        "errors": sum(d["errors"] for _, _, d in rounds),
        "all_202_stored": all(d["all_202_stored"] for _, _, d in rounds),
        "floor": floor,
        "deskbell_sqlite": sqlite,
        "deskbell_postgresql": postgres,
        "naive": naive,
        "deskbell_sqlite_processes_2": processes_2,
    }, option=orjson.OPT_INDENT_2).decode())  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
