"""`deskbell config push FILE`: a file becomes the active config version, like PUT /v1/config,
and an invalid one stores nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deskbell.cli import app
from deskbell.storage.config_versions import ConfigVersion, ConfigVersions
from deskbell.storage.engine import connect

runner = CliRunner()
GOOD = "channels: {c: {type: console}}\nroutes: [{match: {topic: refunds}, to: [c]}]\n"


@pytest.fixture
def db_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'push.db'}"
    monkeypatch.setenv("DESKBELL_DATABASE_URL", url)
    monkeypatch.delenv("DESKBELL_SECRET_KEY", raising=False)
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    return url


def versions(url: str) -> list[ConfigVersion]:
    async def read() -> list[ConfigVersion]:
        db = connect(url)
        try:
            return await ConfigVersions(db).list()
        finally:
            await db.dispose()

    return asyncio.run(read())


def test_a_file_becomes_the_active_version_once(db_url: str, tmp_path: Path) -> None:
    file = tmp_path / "deskbell.yaml"
    file.write_text(GOOD)
    first = runner.invoke(app, ["config", "push", str(file)])
    assert first.exit_code == 0, first.output
    assert "active as config version 1" in first.output
    again = runner.invoke(app, ["config", "push", str(file)])
    assert again.exit_code == 0
    [stored] = versions(db_url)
    assert stored.active
    assert stored.document["routes"] == [{"match": {"topic": "refunds"}, "to": ["c"]}]
    assert stored.author == f"file:{file}"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("routes: [{match: {topc: x}, to: [c]}]\n", "did you mean 'topic'"),
        (
            'channels: {s: {type: slack, webhook_url: "https://hooks.slack.com/services/T/B/x"}}\n'
            "routes: [{match: {topic: a}, to: [s]}]\n",
            "DESKBELL_SECRET_KEY",
        ),
        ("channels: [\n", "YAML"),
    ],
)
def test_an_invalid_file_stores_nothing(db_url: str, tmp_path: Path, text: str, says: str) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(text)
    result = runner.invoke(app, ["config", "push", str(file)])
    assert result.exit_code == 1
    assert says in result.output
    assert versions(db_url) == []
