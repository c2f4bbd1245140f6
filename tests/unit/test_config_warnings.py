"""`config_warnings`: webhook URLs the SSRF guard refuses on every send, found at load."""

from __future__ import annotations

from pathlib import Path

import pytest

from deskbell.channels import build_registry
from deskbell.config.destinations import config_warnings
from deskbell.config.load import load_config, parse_config

ROOT = Path(__file__).parent.parent.parent


def warnings_for(url: str, allow_private: bool = False) -> list[str]:
    allow = "true" if allow_private else "false"
    config = parse_config(
        "channels:\n"
        f"  hook: {{type: webhook, url: '{url}', allow_private_networks: {allow}}}\n"
        "  side: {type: console}\n",
        build_registry(),
        env={},
    )
    return config_warnings(config)


# (url, allow_private_networks, what the warning says, or None for no warning)
CASES: list[tuple[str, bool, str | None]] = [
    ("http://127.0.0.1:9000/hook?token=s3cret", False, "the host 127.0.0.1 is a loopback address"),
    ("http://localhost:8000/x", False, "the host localhost is a loopback address"),
    ("http://api.LOCALHOST/x", False, "is a loopback address"),
    ("http://[::1]/x", False, "the host ::1 is a loopback address"),
    ("http://10.1.2.3/x", False, "is a private address"),
    ("http://192.168.0.10/x", False, "is a private address"),
    ("http://169.254.10.1/x", False, "is a link-local address"),
    ("http://[::ffff:127.0.0.1]/x", False, "is a loopback address"),
    ("http://127.0.0.1/x", True, None),  # allowed on purpose
    ("http://10.1.2.3/x", True, None),
    ("http://169.254.169.254/latest", True, "is a cloud metadata address"),  # never allowed
    ("http://0.0.0.0/x", True, "is not a unicast address"),
    ("https://crm.example.com/hooks/x", False, None),  # a name: judged when sent, after DNS
    ("https://93.184.215.14/x", False, None),  # a public address
]


@pytest.mark.parametrize(("url", "allow_private", "expected"), CASES)
def test_webhook_hosts_the_guard_refuses_are_warned(
    url: str, allow_private: bool, expected: str | None
) -> None:
    warnings = warnings_for(url, allow_private)
    if expected is None:
        assert warnings == []
        return
    assert len(warnings) == 1
    assert warnings[0].startswith("channels.hook.url: the host ")
    assert expected in warnings[0]
    assert "every delivery to hook will go dead" in warnings[0]
    assert ("allow_private_networks: true" in warnings[0]) != allow_private


def test_the_warning_never_shows_the_url_beyond_its_host() -> None:
    (warning,) = warnings_for("http://user:pw@127.0.0.1:9000/hook/s3cret?token=t0ken")
    for secret in ("s3cret", "t0ken", "pw"):
        assert secret not in warning


def test_the_shipped_configs_have_no_warnings() -> None:
    env = {"SLACK_URL": "https://hooks.slack.com/x", "SMTP_HOST": "mail",
           "SLACK_WEBHOOK_URL": "https://hooks.slack.com/x"}  # fmt: skip
    for path in (ROOT / "tests/data/good.yaml", ROOT / "src/deskbell/config/starter.yaml"):
        assert config_warnings(load_config(path, build_registry(), env=env)) == []
