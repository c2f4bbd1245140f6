"""One `whsec_` rule (channels/kit/whsec.py) for the webhook channel's `secret`,
DESKBELL_WEBHOOK_SECRETS and `sources:` secrets. Before, the channel took 24..64 padded bytes
and ingest 24+ bytes, padded or not: a 65-byte or an unpadded secret passed for ingest only."""

from __future__ import annotations

import base64

import pytest
from pydantic import ValidationError

from deskbell.api.webhooks import parse_secrets
from deskbell.channels.kit.whsec import is_webhook_secret
from deskbell.channels.webhook import WebhookSettings
from deskbell.config.schema import SourceConfig
from deskbell.errors import ConfigError


def whsec(size: int, *, padded: bool = True) -> str:
    encoded = base64.b64encode(b"k" * size).decode()
    return "whsec_" + (encoded if padded else encoded.rstrip("="))


GOOD = [whsec(24), whsec(32), whsec(64), whsec(32, padded=False), whsec(25, padded=False)]
BAD = [whsec(23), whsec(65), whsec(32)[len("whsec_") :], "whsec_notbase64!!", "whsec_", ""]


def accepted_everywhere(secret: str) -> list[bool]:
    """Whether each place that takes a secret accepts `secret`."""
    answers = [is_webhook_secret(secret)]
    for check in (
        lambda: WebhookSettings.model_validate(
            {"type": "webhook", "url": "https://crm.example.com/h", "secret": secret}
        ),
        lambda: SourceConfig.model_validate({"secrets": [secret]}),
        lambda: parse_secrets(secret),
    ):
        try:
            answers.append(bool(check()))
        except (ValidationError, ConfigError):
            answers.append(False)
    return answers


@pytest.mark.parametrize("secret", GOOD)
def test_a_standard_webhooks_secret_is_accepted_everywhere(secret: str) -> None:
    assert accepted_everywhere(secret) == [True] * 4


@pytest.mark.parametrize("secret", BAD)
def test_anything_else_is_refused_everywhere(secret: str) -> None:
    assert accepted_everywhere(secret) == [False] * 4
