"""Which callback a request gets (deskbell/callbacks.py) and the config rules behind it: a
source's `callback_url` needs its `callback_secret`, passes the SSRF rule at load, and no
channel may take the events' reserved name."""

from __future__ import annotations

import base64

import pytest

from deskbell.callbacks import CallbackRefused, callback_for, url_refusal
from deskbell.channels import build_registry
from deskbell.config.load import parse_config
from deskbell.config.schema import DeskbellConfig
from deskbell.errors import ConfigError

SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()
CALLBACK = "whsec_" + base64.b64encode(b"c" * 32).decode()
BASE = """
channels:
  console: {type: console}
routes:
  - match: {topic: sales}
    to: [console]
"""


def parse(sources: str, channels: str = "") -> DeskbellConfig:
    text = BASE.replace("  console: {type: console}\n", f"  console: {{type: console}}\n{channels}")
    return parse_config(text + "sources:\n" + sources, build_registry())


def config() -> DeskbellConfig:
    return parse(
        f"""
  bot:
    secrets: [{SECRET}]
    callback_url: https://bot.example.com/events
    callback_secret: {CALLBACK}
  plain:
    secrets: [{SECRET}]
"""
    )


def test_a_source_callback_goes_to_its_requests() -> None:
    assert callback_for(config(), "bot", None) == ("bot", "https://bot.example.com/events")


def test_a_source_without_callback_and_a_key_caller_get_none() -> None:
    assert callback_for(config(), "plain", None) == ("plain", None)
    assert callback_for(config(), None, None) == (None, None)
    assert callback_for(config(), "env", None) == ("env", None)  # DESKBELL_WEBHOOK_SECRETS


def test_the_body_may_name_a_callback_for_a_source_with_a_callback_secret() -> None:
    url = "https://bot.example.com/other"
    assert callback_for(config(), "bot", url) == ("bot", url)


@pytest.mark.parametrize("source", [None, "plain", "env", "unknown"])
def test_anyone_else_naming_a_callback_is_refused(source: str | None) -> None:
    with pytest.raises(CallbackRefused) as caught:
        callback_for(config(), source, "https://bot.example.com/x")
    assert (caught.value.status, caught.value.code) == (403, "callback_not_allowed")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/admin",
        "http://localhost/x",
        "http://10.0.0.5/x",
        "http://[::1]/x",
        "http://169.254.169.254/latest",
    ],
)
def test_a_body_callback_the_guard_refuses_is_422(url: str) -> None:
    with pytest.raises(CallbackRefused) as caught:
        callback_for(config(), "bot", url)
    assert caught.value.status == 422
    assert "refuses" in caught.value.message


def test_private_networks_only_when_the_source_allows_them() -> None:
    assert url_refusal("http://127.0.0.1/x", allow_private=True) is None
    assert url_refusal("http://169.254.169.254/x", allow_private=True) is not None  # never
    assert url_refusal("https://bot.example.com/x", allow_private=False) is None  # DNS later


def test_a_callback_url_needs_a_callback_secret() -> None:
    with pytest.raises(ConfigError) as caught:
        parse(f"  bot:\n    secrets: [{SECRET}]\n    callback_url: https://bot.example.com/e\n")
    assert "sources.bot" in str(caught.value)
    assert "callback_secret" in str(caught.value)


def test_a_callback_secret_must_be_whsec() -> None:
    with pytest.raises(ConfigError) as caught:
        parse(f"  bot:\n    secrets: [{SECRET}]\n    callback_secret: hunter2\n")
    assert "callback_secret" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_a_loopback_callback_url_is_a_config_error_unless_allowed() -> None:
    block = (
        f"  bot:\n    secrets: [{SECRET}]\n    callback_url: http://127.0.0.1:9/e\n"
        f"    callback_secret: {CALLBACK}\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse(block)
    assert "sources.bot.callback_url" in str(caught.value)
    assert "loopback" in str(caught.value)
    allowed = parse(block + "    allow_private_networks: true\n")
    assert allowed.sources["bot"].allow_private_networks


def test_no_channel_may_be_called_callback() -> None:
    with pytest.raises(ConfigError) as caught:
        parse(f"  bot:\n    secrets: [{SECRET}]\n", channels="  callback: {type: console}\n")
    assert "channels.callback" in str(caught.value)


def test_the_callback_url_and_secret_are_redacted() -> None:
    shown = str(config().redacted())
    assert "bot.example.com" not in shown
    assert CALLBACK not in shown
