"""Growth benchmark (issue: performance). Prints JSON.

Does deskbell stay fast as its database grows, and does the server's memory stay flat?

1. Seed: `--rows` requests (default 1,000,000) written straight into a SQLite file made by the
   real migrations, one delivery each, `created_at` spread over the past `--days` with UUIDv7
   ids of that same time. The values go through the column types' own SQLite processors, in
   the formats the server writes; the benchmark then checks that the API reads a seeded
   request back field for field. Deliveries, at random (fixed seed) over the whole history:
   96.5% sent, 2% pending, 1% dead, 0.5% retrying, none in_flight; one attempts row per
   attempt made. The seeded file is kept only in this run's temp dir (or in `--workdir`).
2. Reads on the seeded database, before any ingest: sequential requests from one httpx client
   (keep-alive, pinned to core 1), each timed from send to the last byte: lookups by random
   seeded id, and the default page (limit 50) of the list filtered by each status, by a
   topic, and from a random cursor. Also the server's CPU time per request (/proc), which
   other load on the machine does not inflate.
3. Ingest: `deskbell serve --no-workers` pinned to core 0, wrk (1 thread, 64 connections) on
   core 1, as bench/ingest.py, on an empty database and on the seeded one, alternating for
   `--rounds`; the best run of each counts (other load on the machine only slows a run).
4. Memory: a fresh server takes `--memory-steps` requests (wrk, stopping after N answers);
   VmRSS of the server process after each step.
The server runs at deskbell's defaults (info logs, one line per accepted request).

    .venv/bin/python bench/growth.py [--rows 1000000] [--seconds 10] [--workdir DIR]
Needs wrk (Debian: apt-get install wrk) and taskset (util-linux).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import sqlalchemy as sa
import uuid_utils
from alembic.script import ScriptDirectory
from common import free_port, wait_http
from ingest import start, stop, wrk
from sqlalchemy.dialects.sqlite import aiosqlite

from deskbell.models import AssistanceRequestIn, Outcome
from deskbell.storage.engine import connect
from deskbell.storage.migrate import alembic_config, upgrade
from deskbell.storage.tables import UTCDateTime, attempts, deliveries, requests

# topic -> (channel, share of the requests)
TOPICS = {
    "sales": ("sales-slack", 0.70),
    "pricing": ("pricing-email", 0.25),
    "support": ("support-hook", 0.05),
}
# status -> share of the deliveries; none in_flight (no worker runs)
STATUSES = {"sent": 0.965, "pending": 0.02, "dead": 0.01, "retrying": 0.005}
CONFIG = (
    "channels:\n"
    + "".join(f"  {c}: {{type: console}}\n" for c, _ in TOPICS.values())
    + (
        "routes:\n"
        + "".join(f"  - match: {{topic: {t}}}\n    to: [{c}]\n" for t, (c, _) in TOPICS.items())
    )
)
BODY = orjson.dumps({"topic": "sales", "description": "Wants a quote for 40 seats"}).decode()
POST = f"""wrk.method = "POST"
wrk.body = '{BODY}'
wrk.headers["Content-Type"] = "application/json"
"""
CHUNK = 50_000


# ---- seeding -------------------------------------------------------------------------------


def _insert_sql(table: sa.Table, columns: Sequence[str]) -> str:
    """SQLite's INSERT text for `columns`, positional in that order."""
    stmt = table.insert().values({c: sa.bindparam(c) for c in columns})
    compiled = stmt.compile(dialect=aiosqlite.dialect())
    assert compiled.positiontup == list(columns), compiled.positiontup
    return str(compiled)


REQUEST_COLUMNS = ["id", "topic", "payload", "created_at", "http_request_id"]
DELIVERY_COLUMNS = [
    "id",
    "request_id",
    "channel",
    "status",
    "attempts",
    "created_at",
    "updated_at",
    "next_attempt_at",
    "last_error",
    "sent_at",
]
ATTEMPT_COLUMNS = [
    "delivery_id",
    "number",
    "started_at",
    "duration_ms",
    "outcome",
    "error",
    "worker",
]


def _sqlite_text() -> Callable[[datetime], str]:
    """The SQLite text of an aware datetime, by the UTCDateTime column type itself."""
    dialect = aiosqlite.dialect()
    process = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert process is not None
    return process


def _fast_text(at: datetime) -> str:
    """What `_sqlite_text` makes, ten times faster; checked against it while seeding."""
    return f"{at:%Y-%m-%d %H:%M:%S.%f}"


def _payload(i: int, topic: str) -> dict[str, Any]:
    return {
        "topic": topic,
        "description": f"Customer {i} wants a quote for {i % 97 + 1} seats",
        "customer": {"id": f"c{i}", "name": f"Customer {i}", "email": f"c{i}@example.com"},
        "conversation_url": f"https://chat.example.com/c/{i}",
        "language": "en",
        "metadata": {"plan": "pro", "seats": i % 97 + 1},
    }


def _generate(rows: int, days: float, seed: int) -> Iterator[tuple[list[Any], ...]]:
    """Chunks of (request rows, delivery rows, attempt rows, expected), oldest first.

    Payloads are the JSON the ingest stores (pydantic's `model_dump_json`) and timestamps
    the text of the UTCDateTime column type; both are made by faster equivalents, and every
    1000th row is made both ways and compared."""
    rng = random.Random(seed)
    exact_text = _sqlite_text()
    end = datetime.now(UTC) - timedelta(minutes=5)
    step = days * 86400 / rows
    if step < 0.002:
        raise SystemExit("--days too short for --rows: ids must be a millisecond apart")
    origin = end - timedelta(days=days)
    naive_origin = origin.replace(tzinfo=None)
    topics, topic_weights = list(TOPICS), [w for _, w in TOPICS.values()]
    statuses, status_weights = list(STATUSES), list(STATUSES.values())
    tries_of = {"sent": 1, "pending": 0, "dead": 10, "retrying": 3}
    error_of = {"dead": "HTTP 404 from channel", "retrying": "HTTP 503 from channel"}
    transient, sent, permanent = (
        o.value for o in (Outcome.TRANSIENT, Outcome.SENT, Outcome.PERMANENT)
    )
    for first in range(0, rows, CHUNK):
        reqs: list[Any] = []
        dels: list[Any] = []
        atts: list[Any] = []
        expected: list[Any] = []
        n = min(CHUNK, rows - first)
        picked_topics = rng.choices(topics, topic_weights, k=n)
        picked_statuses = rng.choices(statuses, status_weights, k=n)
        for k in range(n):
            i = first + k
            offset = i * step + rng.random() * step / 2
            at = naive_origin + timedelta(seconds=offset)
            ns = int((origin.timestamp() + offset) * 1e9)
            request_id = str(uuid_utils.uuid7(nanoseconds=ns))
            delivery_id = str(uuid_utils.uuid7(nanoseconds=ns))
            topic = picked_topics[k]
            status = picked_statuses[k]
            payload = orjson.dumps(_payload(i, topic)).decode()
            created = _fast_text(at)
            if i % 1000 == 0:
                stored = AssistanceRequestIn.model_validate(_payload(i, topic))
                assert payload == stored.model_dump_json(exclude_none=True), payload
                assert created == exact_text(at.replace(tzinfo=UTC)), created
            tries = tries_of[status] + (status == "sent" and rng.random() < 0.1)
            settled = _fast_text(at + timedelta(seconds=max(tries, 1) * 0.4))
            reqs.append((request_id, topic, payload, created, uuid_utils.uuid4().hex))
            dels.append(
                (
                    delivery_id,
                    request_id,
                    TOPICS[topic][0],
                    status,
                    tries,
                    created,
                    settled,
                    _fast_text(at + timedelta(seconds=tries * 0.4 + 8))
                    if status == "retrying"
                    else created
                    if status == "pending"
                    else None,
                    error_of.get(status),
                    settled if status == "sent" else None,
                )
            )
            for number in range(1, tries + 1):
                outcome = transient
                if number == tries and status in ("sent", "dead"):
                    outcome = sent if status == "sent" else permanent
                atts.append(
                    (
                        delivery_id,
                        number,
                        _fast_text(at + timedelta(seconds=number * 0.4)),
                        120.0,
                        outcome,
                        None if outcome == sent else "HTTP 503 from channel",
                        "seed",
                    )
                )
            if i == rows // 2:
                expected.append(
                    {
                        "id": request_id,
                        "topic": topic,
                        "created_at": at.replace(tzinfo=UTC),
                        "payload": orjson.loads(payload),
                        "delivery_id": delivery_id,
                        "status": status,
                        "attempts": tries,
                    }
                )
        yield reqs, dels, atts, expected


async def seed(path: Path, rows: int, days: float, seed_value: int) -> dict[str, Any]:
    """A SQLite file at `path` with the migrated schema and `rows` requests; returns the
    one request the check reads back through the API."""
    db = connect(f"sqlite+aiosqlite:///{path}")
    try:
        await upgrade(db)
    finally:
        await db.dispose()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")  # a crash just means seeding again
    conn.execute("PRAGMA cache_size=-262144")  # 256 MiB: the index pages stay in memory
    sqls = [
        _insert_sql(t, c)
        for t, c in (
            (requests, REQUEST_COLUMNS),
            (deliveries, DELIVERY_COLUMNS),
            (attempts, ATTEMPT_COLUMNS),
        )
    ]
    expected: dict[str, Any] = {}
    for reqs, dels, atts, sample in _generate(rows, days, seed_value):
        conn.execute("BEGIN")
        for sql, batch in zip(sqls, (reqs, dels, atts), strict=True):
            conn.executemany(sql, batch)
        conn.execute("COMMIT")
        if sample:
            expected = sample[0]
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return expected


def known_ids(path: Path, k: int, seed_value: int) -> list[str]:
    """k seeded request ids at random (seeded rows have rowids 1..rows)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        (top,) = conn.execute("SELECT max(rowid) FROM requests").fetchone()
        rng = random.Random(seed_value)
        picks = [rng.randint(1, top) for _ in range(k)]
        marks = ",".join("?" * len(picks))
        sql = f"SELECT rowid, id FROM requests WHERE rowid IN ({marks})"
        found = dict(conn.execute(sql, picks))
        return [found[p] for p in picks]
    finally:
        conn.close()


def stored_rows(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM requests").fetchone()[0])
    finally:
        conn.close()


# ---- server --------------------------------------------------------------------------------


class Server:
    """`deskbell serve --no-workers` on `db`, pinned to core 0 (bench/ingest.py `start`)."""

    def __init__(self, db: Path, tmp: Path, name: str) -> None:
        self.port = free_port()
        config = tmp / "growth.yaml"
        config.write_text(CONFIG)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("DESKBELL_")},
            "DESKBELL_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
            "DESKBELL_CONFIG": str(config),
            "DESKBELL_PORT": str(self.port),
        }  # the defaults as users run them: info logs, one line per request
        self.process = start(
            [sys.executable, "-m", "deskbell", "serve", "--no-workers"], env, tmp / f"{name}.log"
        )
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"{name}.log"
        deadline = time.monotonic() + 600  # migrations run at start: an index on 1M rows
        while self.process.poll() is None and time.monotonic() < deadline:
            try:
                wait_http(f"{self.base}/healthz", timeout=2)
                return
            except RuntimeError:
                pass
        stop(self.process)
        raise RuntimeError(f"{name} server did not come up:\n{self.log.read_text()[-4000:]}")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
        raise RuntimeError("no VmRSS")

    def cpu_seconds(self) -> float:
        """User + system CPU time the server has used: unlike latency, not inflated by other
        processes on the machine."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *_: object) -> None:
        stop(self.process)


def run_ingest(server: Server, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    script = tmp / "post.lua"
    script.write_text(POST)
    return wrk(server.port, args.seconds, args.connections, script)


# ---- reads ---------------------------------------------------------------------------------


def percentile(sorted_ms: list[float], q: float) -> float:
    return round(sorted_ms[max(0, math.ceil(q * len(sorted_ms)) - 1)], 2)


def timed(
    server: Server, client: httpx.Client, paths: Iterator[str], samples: int, budget: float
) -> dict[str, Any]:
    """Sequential GETs, each timed to its last byte; stops at `samples` or `budget` s."""
    for _ in range(5):  # warm the connection and the server's caches
        client.get(next(paths)).raise_for_status()
    cpu = server.cpu_seconds()
    times: list[float] = []
    items = 0
    deadline = time.monotonic() + budget
    while len(times) < samples and time.monotonic() < deadline:
        path = next(paths)
        began = time.perf_counter()
        answer = client.get(path)
        times.append((time.perf_counter() - began) * 1000)
        answer.raise_for_status()
        items += len(answer.json().get("items", [None]))
    cpu = server.cpu_seconds() - cpu
    times.sort()
    return {
        "n": len(times),
        "server_cpu_ms": round(cpu * 1000 / len(times), 2),
        "p50_ms": percentile(times, 0.5),
        "p99_ms": percentile(times, 0.99),
        "max_ms": round(times[-1], 2),
        "mean_items": round(items / len(times), 1),
    }


def check_seeded(client: httpx.Client, expected: dict[str, Any]) -> bool:
    """The API reads a seeded request back exactly as seeded."""
    got = client.get(f"/v1/assistance-requests/{expected['id']}").raise_for_status().json()
    payload = expected["payload"]
    (delivery,) = got["deliveries"]
    same = {
        "id": got["id"] == expected["id"],
        "created_at": datetime.fromisoformat(got["created_at"]) == expected["created_at"],
        "payload": AssistanceRequestIn.model_validate(payload)
        == AssistanceRequestIn.model_validate({k: got[k] for k in payload}),
        "delivery": (delivery["id"], delivery["status"], delivery["attempts"])
        == (expected["delivery_id"], expected["status"], expected["attempts"]),
    }
    if not all(same.values()):
        print(f"seeded request read back differently: {same}\n{got}", file=sys.stderr)
    return all(same.values())


def reads(server: Server, ids: list[str], args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)

    def cycle(make: Callable[[], str]) -> Iterator[str]:
        while True:
            yield make()

    listing = "/v1/assistance-requests"
    series: dict[str, Iterator[str]] = {
        "lookup": cycle(lambda: f"{listing}/{rng.choice(ids)}"),
        **{
            f"list_{s}": cycle(lambda s=s: f"{listing}?status={s}")
            for s in ("pending", "sent", "dead", "retrying", "in_flight")
        },
        "list_topic_support": cycle(lambda: f"{listing}?topic=support"),
        "list_pending_support": cycle(lambda: f"{listing}?topic=support&status=pending"),
        "list_all_random_cursor": cycle(lambda: f"{listing}?cursor={rng.choice(ids)}"),
        "list_pending_random_cursor": cycle(
            lambda: f"{listing}?status=pending&cursor={rng.choice(ids)}"
        ),
    }
    out: dict[str, Any] = {}
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {1})  # the client on core 1, as wrk
    try:
        with httpx.Client(base_url=server.base, timeout=60) as client:
            for name, paths in series.items():
                samples = args.lookups if name == "lookup" else args.list_samples
                out[name] = timed(server, client, paths, samples, args.budget)
    finally:
        os.sched_setaffinity(0, affinity)
    return out


# ---- memory --------------------------------------------------------------------------------


def memory(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """VmRSS of a fresh server once it has accepted each of `--memory-steps` requests. wrk
    has no request count: it runs in short bursts until the database holds the next step."""
    db = tmp / "memory.db"
    script = tmp / "post.lua"
    script.write_text(POST)
    series: list[dict[str, Any]] = []
    with Server(db, tmp, "memory") as server:
        series.append({"accepted": 0, "rss_mb": server.rss_mb()})
        done, rate = 0, 2000.0
        for target in args.memory_steps:
            while done < target:
                burst = max(1, min(5, round((target - done) / rate)))
                result = wrk(server.port, burst, args.connections, script)
                if result["errors"]:
                    raise RuntimeError(f"memory run: {result['errors']} errors")
                rate = max(result["rps"], 1.0)
                done = stored_rows(db)
            series.append({"accepted": done, "rss_mb": server.rss_mb()})
    points = [(p["accepted"], p["rss_mb"]) for p in series]
    # growth after the first third (imports, caches and pools warm up first)
    later = [p for p in points if p[0] >= points[-1][0] / 3]
    grow = later[-1][1] - later[0][1]
    per_100k = grow / max(1, later[-1][0] - later[0][0]) * 100_000
    return {
        "series": series,
        "rss_at_100k_mb": next((mb for n, mb in points if n >= 100_000), None),
        "growth_after_warmup_mb": round(grow, 1),
        "growth_mb_per_100k": round(per_100k, 1),
        "grows": per_100k > 10,
    }


# ---- main ----------------------------------------------------------------------------------


def steps(text: str) -> list[int]:
    return [int(s) for s in text.split(",")]


def head_revision() -> str:
    scripts = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return str(scripts.get_current_head())


def ingest_round(db: Path, name: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """One wrk run on `db`; checks that every 202 is a row."""
    before = stored_rows(db) if db.exists() else 0
    with Server(db, tmp, name) as server:
        result = run_ingest(server, args, tmp)
    accepted = result["requests"] - result["errors"]
    added = stored_rows(db) - before
    # wrk stops counting at the deadline; requests it sent but did not count may be stored too
    result["all_202_stored"] = accepted <= added <= accepted + args.connections
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=14)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="ingest runs on each database, alternating; the best counts",
    )
    parser.add_argument("--lookups", type=int, default=2000)
    parser.add_argument("--list-samples", type=int, default=300)
    parser.add_argument("--budget", type=float, default=20, help="seconds per read series")
    parser.add_argument(
        "--memory-steps", type=steps, default=steps("25000,50000,75000,100000,150000")
    )
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the seeded database here, reuse it (default: temp dir)",
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: apt-get install -y wrk")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="deskbell-growth-") as name:
        tmp = Path(name)
        cache = args.workdir or tmp
        cache.mkdir(parents=True, exist_ok=True)
        seeded = cache / f"seed-{args.rows}-{args.days:g}d-{args.seed}-r{head_revision()}.db"
        sample_file = seeded.with_suffix(".json")
        seed_seconds = None
        if not (seeded.exists() and sample_file.exists()):
            began = time.monotonic()
            expected = await seed(seeded, args.rows, args.days, args.seed)
            seed_seconds = round(time.monotonic() - began, 1)
            sample_file.write_bytes(orjson.dumps(expected))
        expected = orjson.loads(sample_file.read_bytes())
        expected["created_at"] = datetime.fromisoformat(expected["created_at"])
        db_mb = round(seeded.stat().st_size / 2**20)

        grown_db = tmp / "grown.db"
        shutil.copyfile(seeded, grown_db)  # the ingest must not change the cached seed
        ids = known_ids(grown_db, 5000, args.seed)
        with Server(grown_db, tmp, "reads") as server:
            with httpx.Client(base_url=server.base) as client:
                read_back = check_seeded(client, expected)
            latency = reads(server, ids, args)

        empty: list[dict[str, Any]] = []
        grown: list[dict[str, Any]] = []
        for r in range(args.rounds):
            empty.append(ingest_round(tmp / f"empty{r}.db", f"empty{r}", args, tmp))
            grown.append(ingest_round(grown_db, f"grown{r}", args, tmp))
        grown_db.unlink()
        mem = None if args.no_memory else memory(args, tmp)

    empty_rps = max(e["rps"] for e in empty)
    grown_rps = max(g["rps"] for g in grown)
    print(
        orjson.dumps(
            {
                "benchmark": "growth",
                "cpus": os.cpu_count(),
                "load_average_before_after": [
                    round(load_before[0], 2),
                    round(os.getloadavg()[0], 2),
                ],
                "rows": args.rows,
                "seed_seconds": seed_seconds,
                "seed_db_mb": db_mb,
                "seeded_read_back": read_back,
                "empty_rps": empty_rps,
                "grown_rps": grown_rps,
                "growth_ratio": round(grown_rps / empty_rps, 3),
                "rps_rounds": {
                    "empty": [e["rps"] for e in empty],
                    "grown": [g["rps"] for g in grown],
                },
                "all_202_stored": all(x["all_202_stored"] for x in empty + grown),
                "lookup_p50_ms": latency["lookup"]["p50_ms"],
                "lookup_p99_ms": latency["lookup"]["p99_ms"],
                "list_pending_p50_ms": latency["list_pending"]["p50_ms"],
                "list_pending_p99_ms": latency["list_pending"]["p99_ms"],
                "list_sent_p50_ms": latency["list_sent"]["p50_ms"],
                "list_sent_p99_ms": latency["list_sent"]["p99_ms"],
                "rss_mb": [p["rss_mb"] for p in mem["series"]] if mem else None,
                "rss_accepted": [p["accepted"] for p in mem["series"]] if mem else None,
                "rss_grows": mem["grows"] if mem else None,
                "latency_method": "sequential GETs from one httpx client (keep-alive) on core 1, "
                "send to last byte, on the seeded database before any ingest",
                "ingest_empty": empty,
                "ingest_grown": grown,
                "reads": latency,
                "memory": mem,
            },
            option=orjson.OPT_INDENT_2,
        ).decode()
    )


if __name__ == "__main__":
    asyncio.run(main())
