"""The entry-point path: a separate package adds a channel type without touching deskbell.

The example package (tests/plugins/deskbell_example_channel) declares its entry point in its own
pyproject.toml. Installing it would write that declaration into a `.dist-info` directory on
sys.path, which is all `importlib.metadata` reads; the fixture writes exactly that directory
from the pyproject into tmp_path instead, so the test needs no install step, no network and
leaves the venv as it found it, while deskbell's registry finds the plugin the way it would
find an installed one.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from deskbell.channels import ENTRY_POINT_GROUP, build_registry
from deskbell.channels.base import ChannelContext
from deskbell.cli import app
from deskbell.errors import ConfigError
from deskbell.models import Outcome
from tests.channels.contract import ReceiverPeer, check_contract
from tests.fakes import make_message
from tests.fakes.receiver import Receiver

PLUGIN = Path(__file__).parent.parent / "plugins" / "deskbell_example_channel"

Install = Callable[[str, dict[str, str]], None]


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Install:
    """`install(dist_name, entry_points)`: a dist-info declaring those `deskbell.channels`
    entry points, on sys.path for this test only; the example package is importable."""
    monkeypatch.syspath_prepend(str(PLUGIN))

    def write(dist: str, entries: dict[str, str]) -> None:
        info = tmp_path / f"{dist.replace('-', '_')}-0.1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n")
        lines = "".join(f"{name} = {target}\n" for name, target in entries.items())
        (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}")
        monkeypatch.syspath_prepend(str(tmp_path))

    return write


@pytest.fixture
def example(install: Install) -> None:
    """The example package's own entry points, read from its pyproject.toml."""
    project = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]
    install(project["name"], project["entry-points"][ENTRY_POINT_GROUP])


def test_without_the_plugin_there_is_no_ntfy_type() -> None:
    assert "ntfy" not in build_registry()


@pytest.mark.usefixtures("example")
def test_registry_loads_the_plugin_from_its_entry_point() -> None:
    import deskbell_example_channel  # type: ignore[import-not-found]  # tests/plugins

    registry = build_registry()
    assert registry["ntfy"] is deskbell_example_channel.CHANNEL_TYPE
    assert {"slack", "email", "webhook", "apprise", "console"} <= set(registry)


@pytest.mark.usefixtures("example")
async def test_plugin_channel_sends_through_deskbell() -> None:
    kind = build_registry()["ntfy"]
    with Receiver(path="/handoffs") as receiver:
        settings = kind.settings_model.model_validate(
            {"type": "ntfy", "url": receiver.url, "priority": 5}
        )
        async with httpx.AsyncClient() as http:
            channel = kind.factory("ops-phone", settings, ChannelContext(http=http))
            result = await channel.send(make_message({"topic": "sales", "description": "Hi"}))
        [request] = receiver.requests
    assert result.outcome is Outcome.SENT
    assert request.headers["title"] == "Assistance requested: sales"
    assert request.headers["priority"] == "5"
    assert b"Hi" in request.body


@pytest.mark.usefixtures("example")
async def test_plugin_keeps_the_channel_contract(http_client: httpx.AsyncClient) -> None:
    with ReceiverPeer(lambda url: {"url": url}) as peer:
        await check_contract(build_registry()["ntfy"], peer, http_client)


@pytest.mark.usefixtures("example")
def test_config_check_accepts_a_plugin_type(tmp_path: Path) -> None:
    config = tmp_path / "plugin.yaml"
    config.write_text(
        "channels:\n  phone: {type: ntfy, url: 'https://ntfy.example/t'}\n"
        "routes:\n  - {match: {topic: sales}, to: [phone]}\n"
    )
    result = CliRunner().invoke(app, ["config", "check", str(config)])
    assert result.exit_code == 0, result.output
    assert "templates: 1 rendered" in result.output


def test_a_plugin_cannot_replace_a_builtin_type(install: Install) -> None:
    install("deskbell-evil-console", {"console": "deskbell.channels.console:CHANNEL_TYPE"})
    with pytest.raises(ConfigError, match="'console' is registered twice"):
        build_registry()


def test_an_entry_point_must_be_a_channel_type(install: Install) -> None:
    install("deskbell-broken", {"broken": "deskbell_example_channel:NtfySettings"})
    with pytest.raises(ConfigError, match="'broken' is not a deskbell ChannelType"):
        build_registry()
