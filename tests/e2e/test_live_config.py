"""Config changes reach every node without a restart (SPEC §8, issue 16): real `deskbell serve
--no-workers` processes and a `deskbell worker` on one database, SQLite and PostgreSQL, a
local webhook receiver as the channel's far end.

Each node is checked through its own HTTP answers (`/readyz` names the version it runs),
the worker through what the receiver gets."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.fakes import wait_until
from tests.fakes.receiver import Receiver
from tests.process import Deskbell, free_port

WITHIN = 5.0  # SPEC §8: every node switches within 5 s
HOOK_ENV = "DESKBELL_TEST_HOOK_URL"  # a ${VAR} reference, resolved on each node
CONFIG = """
channels:
  hook:
    type: webhook
    url: ${DESKBELL_TEST_HOOK_URL}
    allow_private_networks: true
routes:
  - match: {topic: sales}
    to: [hook]
default: reject
"""
WITH_BILLING = CONFIG.replace(
    "default: reject", "  - match: {topic: billing}\n    to: [hook]\ndefault: reject"
)
YAML = {"Content-Type": "application/yaml"}
URL = "/v1/assistance-requests"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as hook:
        yield hook


def environment(tmp_path: Path, database_url: str, receiver: Receiver) -> dict[str, str]:
    config = tmp_path / "deskbell.yaml"
    config.write_text(CONFIG)
    return {
        "DESKBELL_DATABASE_URL": database_url,
        "DESKBELL_CONFIG": str(config),
        "DESKBELL_LOG_FORMAT": "json",
        "DESKBELL_POLL_SECONDS": "0.2",
        HOOK_ENV: receiver.url,
    }


def api_node(stack: ExitStack, env: dict[str, str], tmp_path: Path, name: str) -> Deskbell:
    node = Deskbell(
        ["serve", "--no-workers"], env=env, workdir=tmp_path, port=free_port(), name=name
    )
    stack.callback(node.stop)
    return node.wait_ready(timeout=60)


def worker(stack: ExitStack, env: dict[str, str], tmp_path: Path) -> Deskbell:
    node = Deskbell(["worker"], env=env, workdir=tmp_path, name="worker")
    stack.callback(node.stop)
    return node.wait_ready(timeout=60)


def version_of(node: Deskbell) -> int | None:
    answer = node.client.get("/readyz")
    assert answer.status_code == 200, answer.text
    version: int | None = answer.json()["config_version"]
    return version


def worker_version(node: Deskbell) -> int | None:
    """The last version the worker logged as active (`config_activated`, JSON lines)."""
    found = None
    for line in node.output().splitlines():
        if line.startswith("{") and '"config_activated"' in line:
            found = json.loads(line)["version"]
    return found


def post(node: Deskbell, topic: str, text: str = "x") -> httpx.Response:
    return node.client.post(URL, json={"topic": topic, "description": text})


def within(condition: object, what: str) -> None:
    """`condition()` becomes true within SPEC §8's 5 s from now."""
    wait_until(condition, timeout=WITHIN, what=what)  # type: ignore[arg-type]


def test_a_new_topic_reaches_every_node_and_a_rollback_too(
    tmp_path: Path, database_url: str, receiver: Receiver
) -> None:
    env = environment(tmp_path, database_url, receiver)
    with ExitStack() as stack:
        a = api_node(stack, env, tmp_path, "node-a")
        b = api_node(stack, env, tmp_path, "node-b")
        work = worker(stack, env, tmp_path)
        assert version_of(a) == version_of(b) == 1  # the file, stored once
        assert post(b, "billing").json()["error"]["code"] == "unknown_topic"

        put = a.client.put("/v1/config", content=WITH_BILLING, headers={**YAML, "If-Match": "1"})
        assert put.status_code == 201, put.text
        new = put.json()["number"]
        within(lambda: version_of(b) == new, "node b to run the new version")
        within(lambda: worker_version(work) == new, "the worker to run the new version")
        accepted = post(b, "billing", "through node b")
        assert accepted.status_code == 202, accepted.text
        [sent] = receiver.wait_for_requests(1)
        assert sent.json()["data"]["request_id"] == accepted.json()["id"]

        rollback = a.client.post("/v1/config/versions/1/activate")
        assert rollback.status_code == 201, rollback.text
        back = rollback.json()["number"]
        within(lambda: version_of(b) == back, "node b to run the rollback")
        refused = post(b, "billing")
        assert refused.status_code == 422
        assert refused.json()["error"]["code"] == "unknown_topic"
        within(lambda: worker_version(work) == back, "the worker to run the rollback")
    for node in (a, b, work):
        assert "Traceback" not in node.output()


async def test_steady_ingest_through_three_switches_loses_nothing(
    tmp_path: Path, database_url: str, receiver: Receiver
) -> None:
    """Requests keep coming to two nodes while the config changes three times (the hook's
    settings each time, so its channel object is replaced under load): no 5xx, and every
    202's request reaches the receiver."""
    env = environment(tmp_path, database_url, receiver)
    with ExitStack() as stack:
        a = api_node(stack, env, tmp_path, "node-a")
        b = api_node(stack, env, tmp_path, "node-b")
        worker(stack, env, tmp_path)
        stop = asyncio.Event()
        codes: Counter[int] = Counter()
        ids: list[str] = []

        async def load(url: str) -> None:
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                n = 0
                while not stop.is_set():
                    n += 1
                    answer = await client.post(
                        URL, json={"topic": "sales", "description": f"{url} {n}"}
                    )
                    codes[answer.status_code] += 1
                    if answer.status_code == 202:
                        ids.append(answer.json()["id"])

        loaders = [asyncio.create_task(load(node.url)) for node in (a, b, a, b)]
        async with httpx.AsyncClient(base_url=a.url, timeout=30) as admin:
            versions = []
            for timeout in (7, 8, 9):
                await asyncio.sleep(0.5)  # load runs between the switches
                text = CONFIG.replace(
                    "allow_private_networks: true",
                    f"timeout: {timeout}\n    allow_private_networks: true",
                )
                put = await admin.put("/v1/config", content=text, headers=YAML)
                assert put.status_code == 201, put.text
                versions.append(put.json()["number"])

            async with httpx.AsyncClient(base_url=b.url, timeout=10) as probe:

                async def b_runs_last() -> bool:
                    answer = await probe.get("/readyz")
                    return bool(answer.json()["config_version"] == versions[-1])

                deadline = time.monotonic() + WITHIN
                while not await b_runs_last():
                    assert time.monotonic() < deadline, "node b did not follow"
                    await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # and a little load on the last version
        stop.set()
        await asyncio.gather(*loaders)

        assert set(codes) == {202}, codes
        assert len(ids) > 20
        await receiver.wait_for_requests_async(len(ids), timeout=60)
        delivered = {r.json()["data"]["request_id"] for r in receiver.requests}
        assert set(ids) <= delivered


def test_sighup_reads_the_file_again_and_a_bad_file_changes_nothing(
    tmp_path: Path, database_url: str, receiver: Receiver
) -> None:
    env = environment(tmp_path, database_url, receiver)
    config = Path(env["DESKBELL_CONFIG"])
    with ExitStack() as stack:
        a = api_node(stack, env, tmp_path, "node-a")
        b = api_node(stack, env, tmp_path, "node-b")
        assert version_of(a) == 1

        config.write_text("channels: {hook: {type: carrier-pigeon}}\n")
        os.kill(a.pid, signal.SIGHUP)
        wait_until(lambda: "config_reload_failed" in a.output(), what="the reload to fail")
        assert a.process.poll() is None  # never a crash
        assert "carrier-pigeon" in a.output()  # the log says why
        assert version_of(a) == version_of(b) == 1
        assert post(a, "sales").status_code == 202

        config.write_text(WITH_BILLING)
        os.kill(a.pid, signal.SIGHUP)
        within(lambda: version_of(b) == 2, "node b to run the reloaded file")
        assert version_of(a) == 2
        assert post(b, "billing").status_code == 202


def test_a_node_without_a_variable_keeps_its_config_and_says_so(
    tmp_path: Path, database_url: str, receiver: Receiver
) -> None:
    env = environment(tmp_path, database_url, receiver)
    needs = WITH_BILLING.replace(
        "default: reject",
        "  - match: {topic: refunds}\n    to: [extra]\ndefault: reject",
    ).replace(
        "routes:",
        "  extra:\n    type: webhook\n    url: ${DESKBELL_TEST_EXTRA_URL}\n"
        "    allow_private_networks: true\nroutes:",
    )
    with ExitStack() as stack:
        a = api_node(stack, {**env, "DESKBELL_TEST_EXTRA_URL": receiver.url}, tmp_path, "a")
        b = api_node(stack, env, tmp_path, "node-b")  # lacks DESKBELL_TEST_EXTRA_URL
        put = a.client.put("/v1/config", content=needs, headers=YAML)
        assert put.status_code == 201, put.text
        new = put.json()["number"]
        assert version_of(a) == new

        def refused() -> bool:
            return "config_refused" in b.client.get("/readyz").json()

        within(refused, "node b to refuse the version")
        ready = b.client.get("/readyz").json()
        assert ready["config_version"] == 1  # the old config stays
        assert ready["config_refused"]["version"] == new
        assert "DESKBELL_TEST_EXTRA_URL" in ready["config_refused"]["reason"]
        assert '"config_refused"' in b.output()
        assert post(b, "sales").status_code == 202
        assert post(b, "billing").json()["error"]["code"] == "unknown_topic"


def activations(node: Deskbell, version: int) -> int:
    """How many of the node's processes logged `config_activated` for `version`."""
    return sum(
        1
        for line in node.output().splitlines()
        if line.startswith("{")
        and '"config_activated"' in line
        and json.loads(line)["version"] == version
    )


def test_sighup_to_the_supervisor_or_a_worker_reaches_every_process(
    tmp_path: Path, database_url: str, receiver: Receiver
) -> None:
    """`serve --processes 2`: its parent reloads the file on SIGHUP (uvicorn's own supervisor
    would restart the children) and both children follow; a `deskbell worker` reloads too."""
    env = environment(tmp_path, database_url, receiver)
    config = Path(env["DESKBELL_CONFIG"])
    with ExitStack() as stack:
        server = Deskbell(
            ["serve", "--processes", "2"], env=env, workdir=tmp_path, port=free_port()
        )
        stack.callback(server.stop)
        server.wait_ready(timeout=60)
        wait_until(
            lambda: server.output().count("Application startup complete") >= 2,
            timeout=60,
            what="2 server processes started",
        )
        work = worker(stack, env, tmp_path)
        assert activations(server, 1) == 2

        config.write_text(WITH_BILLING)
        os.kill(server.pid, signal.SIGHUP)
        within(lambda: activations(server, 2) == 2, "both children to run version 2")
        within(lambda: activations(work, 2) == 1, "the worker to run version 2")
        assert "restarting processes" not in server.output()
        assert server.output().count("Application startup complete") == 2  # none restarted

        config.write_text(CONFIG)
        os.kill(work.pid, signal.SIGHUP)
        within(lambda: activations(work, 3) == 1, "the worker to run version 3")
        within(lambda: activations(server, 3) == 2, "both children to run version 3")
        assert post(server, "billing").json()["error"]["code"] == "unknown_topic"
