"""The CLI in-process (Typer's runner): init, config check, db upgrade, requests, retry."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deskbell import __version__
from deskbell.cli import app
from deskbell.models import AssistanceRequestIn, AttemptResult, DeliveryStatus, Outcome
from deskbell.routing.router import Target
from deskbell.storage.engine import connect
from deskbell.storage.store import Storage
from tests.ledger import record_attempt

runner = CliRunner()
DATA = Path(__file__).parent.parent / "data"


@pytest.fixture
def db_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("DESKBELL_DATABASE_URL", url)
    return url


def test_version() -> None:
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"deskbell {__version__}"


def test_init_writes_a_checkable_starter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "deskbell.yaml"
    assert runner.invoke(app, ["init", str(target)]).exit_code == 0
    assert "sales-slack" in target.read_text()
    again = runner.invoke(app, ["init", str(target)])
    assert again.exit_code == 2
    assert "exists" in again.output
    monkeypatch.setenv("SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T/B/x")
    check = runner.invoke(app, ["config", "check", str(target)])
    assert check.exit_code == 0, check.output
    assert "topic=sales" in check.output
    assert "sales-slack" in check.output


def test_config_check_prints_the_routing_table() -> None:
    result = runner.invoke(
        app,
        ["config", "check", str(DATA / "good.yaml")],
        env={"SLACK_URL": "https://hooks.slack.com/services/T/B/s", "SMTP_HOST": "mail"},
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "valid; 3 channels, 2 routes" in lines[0]
    assert lines[1].split() == ["MATCH", "CHANNELS", "NOTES"]
    assert lines[2].split() == ["topic=sales", "sales-slack", "fallback", "ops-console"]
    assert lines[-2].split()[-2:] == ["ops-console", "default"]
    assert lines[-1] == "templates: 7 rendered against the full and minimal sample requests"


def test_config_check_names_the_bad_key() -> None:
    result = runner.invoke(app, ["config", "check", str(DATA / "bad" / "unknown-fallback.yaml")])
    assert result.exit_code == 1
    assert "routes[0].fallback: unknown channel 'gone'" in result.output


def test_db_upgrade_then_requests_list_show_and_retry(db_url: str) -> None:
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0

    async def seed() -> tuple[str, str]:
        db = connect(db_url)
        store = Storage.open(db)
        now = datetime.now(UTC)
        stored, _ = await store.requests.accept_one(
            AssistanceRequestIn(topic="sales", description="from the CLI test"), [Target("x")], now
        )
        (claimed,) = await store.queue.claim("w", now, lease=timedelta(seconds=30), limit=1)
        await record_attempt(
            store,
            claimed,
            AttemptResult(Outcome.PERMANENT, DeliveryStatus.DEAD, now, now, error="HTTP 404"),
        )
        await db.dispose()
        return stored.id, claimed.delivery.id

    request_id, delivery_id = asyncio.run(seed())
    listed = runner.invoke(app, ["requests", "list"])
    assert listed.exit_code == 0
    assert request_id in listed.output
    assert "x=dead" in listed.output
    shown = runner.invoke(app, ["requests", "show", request_id])
    assert shown.exit_code == 0
    assert '"last_error": "HTTP 404"' in shown.output
    retried = runner.invoke(app, ["retry", delivery_id])
    assert retried.exit_code == 0
    assert f"{delivery_id} is pending" in retried.output
    assert runner.invoke(app, ["retry", delivery_id]).exit_code == 1
    assert runner.invoke(app, ["requests", "show", "nope"]).exit_code == 1


def test_every_smtp_setting_the_starter_suggests_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "deskbell.yaml"
    assert runner.invoke(app, ["init", str(target)]).exit_code == 0
    starter = target.read_text()
    suggested = re.findall(r"smtps?://[^\s,]+", starter.split("smtp_url:", 1)[1].split("\n")[0])
    assert len(suggested) >= 2  # the default and the comment's smtps:// form
    monkeypatch.setenv("SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T/B/x")
    for url in suggested:
        monkeypatch.setenv("SMTP_URL", url.rstrip("}"))
        check = runner.invoke(app, ["config", "check", str(target)])
        assert check.exit_code == 0, (url, check.output)
    target.write_text(starter.replace("starttls: false", "starttls: true"))
    monkeypatch.setenv("SMTP_URL", "smtp://mail.example.com")
    check = runner.invoke(app, ["config", "check", str(target)])
    assert check.exit_code == 0, check.output


def test_top_level_help_is_for_users() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "deskbell init" in result.output
    assert "--debug" in result.output
    assert "SPEC" not in result.output
    assert "Thin" not in result.output


LOOPBACK_HOOK = """
channels:
  hook: {type: webhook, url: "http://127.0.0.1:9/hook?token=s3cret"}
routes:
  - match: {topic: sales}
    to: [hook]
"""


def test_config_check_prints_config_warnings(tmp_path: Path) -> None:
    config = tmp_path / "hook.yaml"
    config.write_text(LOOPBACK_HOOK)
    result = runner.invoke(app, ["config", "check", str(config)])
    assert result.exit_code == 0, result.output
    (warning,) = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert warning.startswith("warning: channels.hook.url: the host 127.0.0.1 is a loopback")
    assert "s3cret" not in result.output
