"""The real thing: `deskbell serve` as a subprocess, routing `sales` to the fake Slack and
`pricing` to a real SMTP server, observed only through HTTP, SMTP and the status API."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes import wait_until
from tests.fakes.slack import FakeSlack
from tests.fakes.smtp import FakeSMTP
from tests.process import Deskbell, free_port, run_to_exit

CONFIG = """
channels:
  sales-slack:
    type: slack
    webhook_url: ${{SLACK_URL}}
  pricing-email:
    type: email
    smtp_url: {smtp}
    from: deskbell@example.com
    to: [pricing@example.com]
routes:
  - match: {{topic: sales}}
    to: [sales-slack]
  - match: {{topic: pricing}}
    to: [pricing-email]
"""


@pytest.fixture
def peers() -> Iterator[tuple[FakeSlack, FakeSMTP]]:
    with FakeSlack() as slack, FakeSMTP() as smtp:
        yield slack, smtp


@pytest.fixture
def server(tmp_path: Path, peers: tuple[FakeSlack, FakeSMTP]) -> Iterator[Deskbell]:
    slack, smtp = peers
    config = tmp_path / "deskbell.yaml"
    config.write_text(CONFIG.format(smtp=smtp.url))
    port = free_port()
    env = {
        "DESKBELL_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'e2e.db'}",
        "DESKBELL_CONFIG": str(config),
        "DESKBELL_PORT": str(port),
        "DESKBELL_LOG_FORMAT": "json",
        "SLACK_URL": slack.url,
    }
    running = Deskbell(["serve"], env=env, workdir=tmp_path, port=port)
    try:
        yield running.wait_ready()
    finally:
        running.stop()


def test_sales_to_slack_and_pricing_to_email(
    server: Deskbell, peers: tuple[FakeSlack, FakeSMTP]
) -> None:
    slack, smtp = peers
    sales = server.client.post(
        "/v1/assistance-requests",
        json={
            "topic": "sales",
            "description": "Wants 40 seats",
            "customer": {"name": "Ana", "email": "ana@example.com"},
            "conversation_url": "https://chat.example.com/c/9",
        },
    )
    pricing = server.client.post(
        "/v1/assistance-requests",
        json={
            "topic": "pricing",
            "description": "NGO discount?",
            "customer": {"email": "ngo@example.org"},
        },
    )
    assert sales.status_code == pricing.status_code == 202

    (payload,) = slack.wait_for_payloads(1, timeout=10)
    assert "Wants 40 seats" in payload["text"]
    assert "sales" in payload["text"]
    (mail,) = smtp.wait_for_messages(1, timeout=10)
    assert mail.rcpt_tos == ["pricing@example.com"]
    assert mail.message["Reply-To"] == "ngo@example.org"
    plain = mail.message.get_body(("plain",))
    html = mail.message.get_body(("html",))
    assert plain is not None
    assert "NGO discount?" in plain.get_content()
    assert html is not None
    assert "NGO discount?" in html.get_content()

    def both_sent() -> bool:
        return all(
            server.client.get(answer.headers["location"]).json()["status"] == "sent"
            for answer in (sales, pricing)
        )

    wait_until(both_sent, timeout=10, what="both requests sent per the status API")
    shown = server.client.get(sales.headers["location"]).json()
    (delivery,) = shown["deliveries"]
    assert (delivery["channel"], delivery["status"], delivery["attempts"]) == (
        "sales-slack",
        "sent",
        1,
    )
    assert delivery["sent_at"] is not None

    output = server.stop()
    assert server.process.returncode == 0
    assert '"event":"request_accepted"' in output
    assert slack.url not in output  # the webhook URL is a secret


def test_send_command_posts_to_the_server(server: Deskbell, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "deskbell", "send", "--topic", "sales", "--description", "From CLI",
         "--url", server.url],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert '"status": "accepted"' in result.stdout


def test_invalid_config_stops_the_server_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("channels:\n  s: {type: slack}\nroutes: []\n")
    env = {
        "DESKBELL_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'bad.db'}",
        "DESKBELL_CONFIG": str(config),
        "DESKBELL_PORT": str(free_port()),
    }
    code, output = run_to_exit(["serve"], env=env, workdir=tmp_path)
    assert code == 2
    assert "channels.s: Value error, set either webhook_url, or token and channel" in output


def test_demo_config_without_a_file(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "DESKBELL_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}",
        "DESKBELL_PORT": str(port),
    }
    running = Deskbell(["serve"], env=env, workdir=tmp_path, port=port)
    try:
        running.wait_ready()
        topics = running.client.get("/v1/topics").json()["topics"]
        assert [t["topic"] for t in topics] == ["pricing", "sales"]
        answer = running.client.post(
            "/v1/assistance-requests", json={"topic": "sales", "description": "demo"}
        )
        assert answer.status_code == 202
        wait_until(
            lambda: running.client.get(answer.headers["location"]).json()["status"] == "sent",
            what="console delivery",
        )
    finally:
        output = running.stop()
    assert "built-in demo config" in output
    assert "deskbell init" in output
    assert "demo" in output  # the console channel printed the request
