"""`deskbell routes test` in-process (Typer's runner): the dry run's answer from a file, as a
table or as the API's JSON, and one-line errors with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deskbell.cli import app

runner = CliRunner()

CONFIG = """
channels:
  es-slack: {type: console}
  sales-slack: {type: console}
  big-deals: {type: console}
  ops: {type: console}
routes:
  - match: {topic: sales, language: es}
    to: [es-slack]
  - match: {topic: sales, metadata.seats: {gte: 50}}
    to: [big-deals]
    continue: true
  - match: {topic: sales}
    to: [sales-slack]
  - match: {topic: support}
    when: {days: mon-fri, hours: "09:00-18:00", tz: Europe/Madrid}
    to: [ops]
default: reject
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "deskbell.yaml"
    path.write_text(CONFIG)
    return path


def test_a_table_names_each_route_and_the_channels(config: Path) -> None:
    args = ["--topic", "sales", "--field", "metadata.seats=60", "--config", str(config)]
    result = runner.invoke(app, ["routes", "test", *args])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[1].split() == ["ROUTE", "MATCH", "WHEN", "CHANNELS"]
    assert lines[2].split("  ")[0] == "routes[1] (continue)"
    assert "topic=sales, metadata.seats=(>= 50)" in lines[2]
    assert lines[2].split()[-2:] == ["-", "big-deals"]
    assert lines[3].split() == ["routes[2]", "topic=sales", "-", "sales-slack"]
    assert lines[-1] == "channels: big-deals, sales-slack"


def test_json_is_the_api_answer_and_at_picks_the_window(config: Path) -> None:
    def run(at: str) -> dict[str, object]:
        args = ["routes", "test", "--topic", "support", "--at", at, "--json"]
        result = runner.invoke(app, [*args, "--config", str(config)])
        assert result.exit_code == 0, result.output
        return dict(json.loads(result.output))

    monday = run("2026-03-30T09:30:00+02:00")
    saturday = run("2026-03-28T09:30:00+01:00")
    assert monday["channels"] == ["ops"]
    assert monday["routes"] == [
        {
            "index": 3,
            "match": {"topic": "support"},
            "when": {"days": "mon-fri", "hours": "09:00-18:00", "tz": "Europe/Madrid"},
            "channels": ["ops"],
            "continue": False,
            "fallback": None,
        }
    ]
    assert (saturday["channels"], saturday["rejected"], saturday["default"]) == ([], True, True)


def test_the_config_defaults_to_deskbell_config(config: Path) -> None:
    result = runner.invoke(
        app,
        ["routes", "test", "--topic", "sales", "--field", "language=ES"],
        env={"DESKBELL_CONFIG": str(config)},
    )
    assert result.exit_code == 0, result.output
    assert str(config) in result.output.splitlines()[0]
    assert result.output.splitlines()[-1] == "channels: es-slack"


def test_no_route_and_reject_is_an_answer_not_an_error(config: Path) -> None:
    result = runner.invoke(app, ["routes", "test", "--topic", "legal", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "ingest answers 422 unknown_topic" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--field", "lang=es"], "--field 'lang=es': no request has the field 'lang'"),
        (["--field", "language"], "--field 'language': write PATH=VALUE"),
        (["--field", "language=english"], "invalid request: language: must be a BCP 47"),
        (["--at", "tomorrow"], "--at 'tomorrow': not an ISO 8601 time"),
        (["--at", "2026-03-30T09:00:00"], "give its zone"),
        (["--config", "/nonexistent/deskbell.yaml"], "cannot read /nonexistent/deskbell.yaml"),
    ],
)
def test_errors_are_one_line_and_exit_2(config: Path, args: list[str], message: str) -> None:
    argv = ["routes", "test", "--topic", "sales", "--config", str(config), *args]
    result = runner.invoke(app, argv)
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1
    assert message in errors[0]


def test_an_invalid_config_names_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(CONFIG.replace("tz: Europe/Madrid", "tz: Europe/Madird"))
    result = runner.invoke(app, ["routes", "test", "--topic", "sales", "--config", str(bad)])
    assert result.exit_code == 2
    assert "routes[3].when.tz: unknown time zone 'Europe/Madird'" in result.output
