"""Real processes: JSON logs carry the caller's X-Request-ID from the ingest line into the
delivery attempt lines, and with PROMETHEUS_MULTIPROC_DIR an API node's /metrics counts what
a separate worker process delivered."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.fakes import wait_until
from tests.process import Deskbell, free_port

CONFIG = """
channels:
  console:
    type: console
routes:
  - match: {topic: sales}
    to: [console]
"""


def json_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def base_env(tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "deskbell.yaml"
    config.write_text(CONFIG)
    return {
        "DESKBELL_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'obs.db'}",
        "DESKBELL_CONFIG": str(config),
        "DESKBELL_LOG_FORMAT": "json",
        "DESKBELL_POLL_SECONDS": "0.1",
    }


def sent(server: Deskbell, location: str) -> bool:
    return bool(server.client.get(location).json()["status"] == "sent")


def test_request_id_reaches_the_delivery_attempt_lines(tmp_path: Path) -> None:
    port = free_port()
    server = Deskbell(["serve"], env=base_env(tmp_path), workdir=tmp_path, port=port)
    try:
        server.wait_ready()
        answer = server.client.post(
            "/v1/assistance-requests",
            json={"topic": "sales", "description": "log me"},
            headers={"X-Request-ID": "abc"},
        )
        assert answer.status_code == 202
        assert answer.headers["X-Request-ID"] == "abc"
        wait_until(lambda: sent(server, answer.headers["location"]), what="console delivery")
    finally:
        output = server.stop()
    lines = json_lines(output)
    assert lines, output
    (accepted,) = [e for e in lines if e["event"] == "request_accepted"]
    assert accepted["http_request_id"] == "abc"
    assert accepted["request_id"] == answer.json()["id"]  # the assistance request, unchanged
    attempts = [e for e in lines if e["event"] == "delivery_attempt"]
    assert [(e["http_request_id"], e["status"]) for e in attempts] == [("abc", "sent")]


def test_a_worker_process_sends_on_the_loop_a_server_does(tmp_path: Path) -> None:
    env = base_env(tmp_path)
    server = Deskbell(["serve"], env=env, workdir=tmp_path, port=free_port(), name="server")
    try:
        server.wait_ready()
    finally:
        served = server.stop()
    worker = Deskbell(["worker"], env=env, workdir=tmp_path, name="worker")
    try:
        worker.wait_ready()
    finally:
        alone = worker.stop()
    loops = [
        [e["loop"] for e in json_lines(output) if e["event"] == "worker_started"]
        for output in (served, alone)
    ]
    assert loops == [["uvloop"], ["uvloop"]], (served, alone)


def test_api_node_counts_what_a_worker_process_delivered(tmp_path: Path) -> None:
    shared = tmp_path / "metrics"
    shared.mkdir()
    env = {**base_env(tmp_path), "PROMETHEUS_MULTIPROC_DIR": str(shared)}
    port = free_port()
    api = Deskbell(["serve", "--no-workers"], env=env, workdir=tmp_path, port=port, name="api")
    worker = Deskbell(["worker"], env=env, workdir=tmp_path, name="worker")
    try:
        api.wait_ready()
        worker.wait_ready()
        answer = api.client.post(
            "/v1/assistance-requests", json={"topic": "sales", "description": "two processes"}
        )
        assert answer.status_code == 202
        wait_until(lambda: sent(api, answer.headers["location"]), what="worker delivery")
        text = api.client.get("/metrics").text
    finally:
        worker.stop()
        api.stop()
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    sent_key = (
        "deskbell_deliveries_total",
        (("channel", "console"), ("outcome", "sent")),
    )
    accepted_key = ("deskbell_requests_total", (("outcome", "accepted"), ("topic", "sales")))
    assert found[sent_key] == 1  # counted in the worker process, served by the API
    assert found[accepted_key] == 1
    assert found[("deskbell_deliveries_pending", (("channel", "console"),))] == 0
    assert len(list(shared.glob("counter_*.db"))) == 2  # one file per process
