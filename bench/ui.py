"""Dashboard page speed (issue 19): every /ui page with 100,000 stored requests. Prints JSON.

Seeds a SQLite file as bench/growth.py does (`--rows`, default 100,000: one delivery each,
1% dead, attempts rows), starts `deskbell serve --no-workers` on it with auth off (loopback),
and times sequential GETs of each page from one keep-alive client, to the last byte. The
target: p95 <= 100 ms for every page (`ok`). Not part of `make test`.

    .venv/bin/python bench/ui.py [--rows 100000] [--samples 200] [--workdir DIR]
Needs taskset (util-linux), as growth.py.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
from growth import Server, known_ids, percentile, seed

TARGET_P95_MS = 100.0


def pages(ids: list[str]) -> dict[str, Iterator[str]]:
    rng = random.Random(7)
    return {
        "requests": itertools.repeat("/ui/requests"),
        "requests_rows (the 3 s poll)": itertools.repeat("/ui/requests/rows"),
        "requests?status=dead": itertools.repeat("/ui/requests?status=dead"),
        "requests?topic=sales&since=24h": itertools.repeat("/ui/requests?topic=sales&since=24h"),
        "requests?handoff=claimed": itertools.repeat("/ui/requests?handoff=claimed"),
        "request (random id)": (f"/ui/requests/{rng.choice(ids)}" for _ in itertools.count()),
        "dead-letters": itertools.repeat("/ui/dead-letters"),
        "dead-letters confirm (count)": itertools.repeat("/ui/dead-letters?confirm=1"),
        "channels": itertools.repeat("/ui/channels"),
        "config": itertools.repeat("/ui/config"),
        "keys": itertools.repeat("/ui/keys"),
    }


def measure(client: httpx.Client, paths: Iterator[str], samples: int) -> dict[str, Any]:
    for _ in range(5):  # warm the connection and the server's caches
        client.get(next(paths)).raise_for_status()
    times: list[float] = []
    for _ in range(samples):
        path = next(paths)
        began = time.perf_counter()
        answer = client.get(path)
        times.append((time.perf_counter() - began) * 1000)
        answer.raise_for_status()
    times.sort()
    p95 = percentile(times, 0.95)
    return {
        "n": len(times),
        "p50_ms": percentile(times, 0.5),
        "p95_ms": p95,
        "max_ms": round(times[-1], 2),
        "ok": p95 <= TARGET_P95_MS,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--days", type=float, default=30)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.workdir or Path(scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        db = tmp / "ui.db"
        began = time.monotonic()
        if not db.exists():
            asyncio.run(seed(db, args.rows, args.days, args.seed))
        seeded_s = round(time.monotonic() - began, 1)
        ids = known_ids(db, 500, args.seed)
        results: dict[str, Any] = {}
        with Server(db, tmp, "ui") as server, httpx.Client(base_url=server.base) as client:
            for name, paths in pages(ids).items():
                results[name] = measure(client, paths, args.samples)
        print(
            orjson.dumps(
                {
                    "rows": args.rows,
                    "seed_seconds": seeded_s,
                    "target_p95_ms": TARGET_P95_MS,
                    "all_ok": all(r["ok"] for r in results.values()),
                    "pages": results,
                },
                option=orjson.OPT_INDENT_2,
            ).decode()
        )


if __name__ == "__main__":
    main()
