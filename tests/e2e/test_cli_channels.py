"""`deskbell channels test NAME` (no server: the CLI sends itself) and the template check of
`deskbell config check`, in-process through Typer's runner, against real local peers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from deskbell.cli import app
from tests.fakes.slack import FakeSlack, Reply

runner = CliRunner()


def slack_config(fake: FakeSlack) -> str:
    return f"""
channels:
  sales-slack: {{type: slack, webhook_url: "{fake.url}"}}
  ops-console: {{type: console}}
routes:
  - {{match: {{topic: sales}}, to: [sales-slack]}}
"""


def test_channels_test_sends_and_reports(
    fake_slack: FakeSlack, write_config: Callable[[str], Path]
) -> None:
    path = write_config(slack_config(fake_slack))

    result = runner.invoke(app, ["channels", "test", "sales-slack", "--config", str(path)])

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[:2] == ["channel: sales-slack (slack)", "status: sent"]
    assert lines[2].startswith("duration_ms: ")
    assert lines[3] == "error: -"
    [payload] = fake_slack.payloads
    assert payload["blocks"][0]["text"]["text"] == "Assistance requested: deskbell-test"


def test_channels_test_exits_1_with_the_error(
    fake_slack: FakeSlack, write_config: Callable[[str], Path]
) -> None:
    fake_slack.reply_next(Reply(404))
    path = write_config(slack_config(fake_slack))

    result = runner.invoke(app, ["channels", "test", "sales-slack", "--config", str(path)])

    assert result.exit_code == 1
    assert "status: permanent" in result.output
    assert "error: HTTP 404: no_service" in result.output
    assert fake_slack.path not in result.output  # the webhook URL is a secret


def test_channels_test_reads_deskbell_config_and_names_unknown_channels(
    fake_slack: FakeSlack, write_config: Callable[[str], Path]
) -> None:
    path = write_config(slack_config(fake_slack))

    result = runner.invoke(app, ["channels", "test", "nope"], env={"DESKBELL_CONFIG": str(path)})

    assert result.exit_code == 1
    assert "no channel 'nope'" in result.output
    assert "['ops-console', 'sales-slack']" in result.output


def test_config_check_renders_templates_and_names_the_broken_one(
    write_config: Callable[[str], Path],
) -> None:
    broken = write_config(
        "channels:\n  c:\n    type: console\n    template:\n"
        '      text: "Hi {{ customer.name }}\\n{{ conversation_url.upper() }}"\n'
        "routes:\n  - {match: {topic: sales}, to: [c]}\n"
    )

    result = runner.invoke(app, ["config", "check", str(broken)])

    assert result.exit_code == 1
    assert "channels.c: template 'text' (inline), line 2:" in result.output
    assert "[with the minimal sample request]" in result.output


def test_config_check_reports_how_many_templates_rendered(
    fake_slack: FakeSlack, write_config: Callable[[str], Path]
) -> None:
    result = runner.invoke(app, ["config", "check", str(write_config(slack_config(fake_slack)))])

    assert result.exit_code == 0, result.output
    assert "templates: 4 rendered against the full and minimal sample requests" in result.output
