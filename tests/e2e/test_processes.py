"""`deskbell serve --processes N`: real server processes on one port, on SQLite and PostgreSQL,
observed through HTTP, the fake Slack, the database, the metric files and /proc."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from deskbell.storage.engine import connect
from deskbell.storage.tables import attempts, deliveries
from tests.fakes import wait_until, wait_until_true
from tests.fakes.slack import FakeSlack
from tests.process import Deskbell, free_port, run_to_exit

CONFIG = """
channels:
  sales-slack:
    type: slack
    webhook_url: {url}
routes:
  - match: {{topic: sales}}
    to: [sales-slack]
"""
ACCEPTED = ("deskbell_requests_total", (("outcome", "accepted"), ("topic", "sales")))


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


def environment(tmp_path: Path, database_url: str, slack: FakeSlack) -> dict[str, str]:
    config = tmp_path / "deskbell.yaml"
    config.write_text(CONFIG.format(url=slack.url))
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return {
        "DESKBELL_DATABASE_URL": database_url,
        "DESKBELL_CONFIG": str(config),
        "DESKBELL_LOG_FORMAT": "json",
        "DESKBELL_POLL_SECONDS": "0.2",
        "TMPDIR": str(tmp_path / "tmp"),  # where serve makes its metrics directory
    }


def server_children(parent: int) -> set[int]:
    """The uvicorn server processes of `parent` (its multiprocessing resource tracker is a
    child too, and is left out)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"spawn_main" in cmdline:
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def start(args: list[str], env: dict[str, str], tmp_path: Path, processes: int) -> Deskbell:
    """A `serve` with every one of its `processes` children past its startup."""
    server = Deskbell(args, env=env, workdir=tmp_path, port=free_port())
    try:
        server.wait_ready(timeout=60)
        wait_until(
            lambda: server.output().count("Application startup complete") >= processes,
            timeout=60,
            what=f"{processes} server processes started",
        )
    except BaseException:
        server.stop()
        raise
    return server


def metrics_dir(tmp_path: Path) -> Path:
    (path,) = (tmp_path / "tmp").glob("deskbell-metrics-*")
    return path


def accepted_by_process(directory: Path, tmp_path: Path) -> dict[int, float]:
    """pid -> requests it accepted, read from each process's own counter file."""
    counts = {}
    for file in directory.glob("counter_*.db"):
        alone = tmp_path / f"one-{file.stem}"
        alone.mkdir(exist_ok=True)
        shutil.copy(file, alone / file.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))  # type: ignore[no-untyped-call]
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in registry.collect()
            for s in family.samples
        }
        counts[int(file.stem.rsplit("-", 1)[1])] = samples.get(ACCEPTED, 0.0)
    return counts


async def post_fresh_connections(url: str, n: int, concurrency: int) -> list[int]:
    """POST `n` requests, each on a new connection (so the kernel hands them to whichever
    process accepts first, as with many clients); returns the status codes in order."""
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def post(i: int) -> int:
            async with gate:
                body = {"topic": "sales", "description": f"req-{i:05d}"}
                return (await client.post("/v1/assistance-requests", json=body)).status_code

        return list(await asyncio.gather(*(post(i) for i in range(n))))


async def test_two_processes_store_and_deliver_each_request_once(
    tmp_path: Path, database_url: str, slack: FakeSlack
) -> None:
    slack.delay = 0.01
    env = environment(tmp_path, database_url, slack)
    server = start(["serve", "--processes", "2"], env, tmp_path, 2)
    database = connect(database_url)
    try:
        children = server_children(server.pid)
        assert len(children) == 2
        directory = metrics_dir(tmp_path)
        codes = await post_fresh_connections(server.url, 600, concurrency=48)
        assert Counter(codes) == {202: 600}  # none 503 from a locked SQLite

        async def recorded() -> list[tuple[str, int]]:
            async with database.reader.connect() as conn:
                query = sa.select(deliveries.c.status, deliveries.c.attempts)
                return [(status, n) for status, n in (await conn.execute(query)).all()]

        async def all_sent() -> bool:
            return all(status == "sent" for status, _ in await recorded())

        await wait_until_true(all_sent, timeout=60, what="600 recorded as sent")
        rows = await recorded()

        async def all_counted() -> bool:  # each process adds its counts within FLUSH_SECONDS
            return sum(accepted_by_process(directory, tmp_path).values()) == 600

        await wait_until_true(all_counted, timeout=10, what="600 accepted in the counter files")
        by_process = accepted_by_process(directory, tmp_path)
        text = server.client.get("/metrics").text
        async with database.reader.connect() as conn:
            tried = (
                await conn.execute(
                    sa.select(
                        attempts.c.delivery_id,
                        attempts.c.outcome,
                        attempts.c.worker,
                        attempts.c.error,
                    )
                )
            ).all()
    finally:
        await database.dispose()
        code = server.terminate()
    output = server.output()
    assert code == 0
    assert not any(alive(pid) for pid in children)
    assert output.count('"event":"worker_stopped"') == 2  # each child stopped its workers
    assert not directory.exists()  # the run's metrics directory is removed at exit
    assert "database is locked" not in output

    # Exactly once: Slack got each request once, and each delivery has one sent attempt. An
    # attempt that failed first (the fake refusing a connection under load) may precede it.
    seen = Counter(p["text"].split("req-")[1][:5] for p in slack.payloads)
    assert len(seen) == 600
    assert set(seen.values()) == {1}
    assert len(rows) == 600
    assert {status for status, _ in rows} == {"sent"}
    sent = Counter(delivery for delivery, outcome, _, _ in tried if outcome == "sent")
    assert len(sent) == 600
    assert set(sent.values()) == {1}
    failed = [(outcome, error) for _, outcome, _, error in tried if outcome != "sent"]
    print(f"two processes: {len(failed)} attempts failed before being sent again: {failed[:5]}")
    senders = {int(worker.rsplit(":", 2)[1]) for _, outcome, worker, _ in tried}
    assert senders == children  # both processes ran workers
    assert set(by_process) == children
    assert all(n > 0 for n in by_process.values()), by_process  # both served requests
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert found[ACCEPTED] == sum(by_process.values()) == 600  # /metrics sums both


async def test_a_killed_process_is_replaced(
    tmp_path: Path, sqlite_url: str, slack: FakeSlack
) -> None:
    env = {**environment(tmp_path, sqlite_url, slack), "DESKBELL_PROCESSES": "2"}
    server = start(["serve", "--no-workers"], env, tmp_path, 2)
    try:
        first = server_children(server.pid)
        assert len(first) == 2
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: len(server_children(server.pid) - {victim}) == 2,
            timeout=60,
            what="a replacement server process",
        )
        wait_until(
            lambda: server.output().count("Application startup complete") >= 3,
            timeout=60,
            what="the replacement's startup",
        )
        codes = await post_fresh_connections(server.url, 50, concurrency=8)
    finally:
        code = server.terminate()
    assert Counter(codes) == {202: 50}
    assert code == 0
    assert slack.payloads == []  # --no-workers in every process: nothing was delivered


def test_children_stop_when_the_parent_is_killed(
    tmp_path: Path, sqlite_url: str, slack: FakeSlack
) -> None:
    env = environment(tmp_path, sqlite_url, slack)
    server = start(["serve", "--processes", "2"], env, tmp_path, 2)
    children = server_children(server.pid)
    try:
        assert len(children) == 2
        server.kill()  # SIGKILL: the parent cannot stop them itself
        wait_until(
            lambda: not any(alive(pid) for pid in children),
            timeout=60,
            what="the orphaned server processes to exit",
        )
    finally:
        server.stop()
        for pid in filter(alive, children):  # only if the test failed: leave nothing behind
            os.kill(pid, signal.SIGKILL)
    assert server.output().count('"event":"worker_stopped"') == 2  # they stopped gracefully
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.url}/healthz", timeout=2)  # nobody holds the port any more


GOOD = "channels:\n  c: {type: console}\nroutes:\n  - match: {topic: sales}\n    to: [c]\n"
BAD = "channels:\n  s: {type: slack}\nroutes: []\n"


@pytest.mark.parametrize(
    ("args", "env", "config", "message"),
    [
        (["--processes", "0"], {}, GOOD, "Invalid value for '--processes'"),
        ([], {"DESKBELL_PROCESSES": "0"}, GOOD, "DESKBELL_PROCESSES: Input should be greater"),
        (["--processes", "2", "--host", "0.0.0.0"], {}, GOOD, "refusing to listen on 0.0.0.0"),
        (["--processes", "2"], {}, BAD, "channels.s: Value error, set either webhook_url"),
    ],
)
def test_start_errors_stop_the_parent_before_any_child(
    tmp_path: Path, args: list[str], env: dict[str, str], config: str, message: str
) -> None:
    path = tmp_path / "deskbell.yaml"
    path.write_text(config)
    environ = {
        "DESKBELL_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'x.db'}",
        "DESKBELL_CONFIG": str(path),
        "DESKBELL_PORT": str(free_port()),
        **env,
    }
    code, output = run_to_exit(["serve", *args], env=environ, workdir=tmp_path)
    assert code == 2, output
    assert message in output
    assert "Started parent process" not in output  # nothing was spawned


def test_a_process_that_cannot_start_stops_the_server(
    tmp_path: Path, sqlite_url: str, slack: FakeSlack
) -> None:
    env = environment(tmp_path, sqlite_url, slack)
    # The parent creates no metric; each child fails creating its first one.
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "missing")
    code, output = run_to_exit(["serve", "--processes", "2"], env=env, workdir=tmp_path, timeout=90)
    assert code == 2, output
    assert '"event":"server_process_failed"' in output
    assert "could not start" in output
    assert 1 <= output.count('"event":"server_process_failed"') <= 2  # not respawned
