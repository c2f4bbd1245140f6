"""Apprise channel through Apprise's generic `json://` scheme, aimed at a real local receiver."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apprise
import pytest
from pydantic import ValidationError

from deskbell.channels.apprise import CHANNEL_TYPE, AppriseChannel
from deskbell.channels.base import ChannelContext, Message
from deskbell.channels.kit import render as templates
from deskbell.models import Outcome
from tests.channels.contract import Peer, ReceiverPeer
from tests.fakes import make_message
from tests.fakes.receiver import Receiver


def contract_peer() -> Peer:
    """For tests/channels/test_contract.py: `json://` to a receiver. Apprise does not say which
    failures are permanent, so every failed notify is transient: no HTTP status table."""
    return ReceiverPeer(
        lambda url: {"urls": url.replace("http://", "json://", 1)}, http_statuses=False
    )


def build_check(message: Message) -> None:
    """For tests/channels/test_every_body_sends.py: every template renders."""
    settings = CHANNEL_TYPE.settings_model.model_validate(CHANNEL_TYPE.settings_model.EXAMPLE)
    for name in settings.TEMPLATES:
        templates.render(name, message, settings.TEMPLATES, settings.template)


def json_url(receiver: Receiver) -> str:
    return receiver.url.replace("http://", "json://", 1)


def channel(ctx: ChannelContext, **block: Any) -> AppriseChannel:
    settings = CHANNEL_TYPE.settings_model.model_validate({"type": "apprise", **block})
    built = CHANNEL_TYPE.factory("ops-apprise", settings, ctx)
    assert isinstance(built, AppriseChannel)
    return built


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


async def test_notification_arrives_as_apprise_json(
    receiver: Receiver, ctx: ChannelContext
) -> None:
    message = make_message(
        {"topic": "sales", "description": "Wants a quote", "customer": {"name": "Ana"}}
    )

    result = await channel(ctx, urls=json_url(receiver)).send(message)

    assert result.outcome is Outcome.SENT
    [request] = receiver.requests
    body = request.json()
    assert body["title"] == "Assistance requested: sales"
    assert "Wants a quote" in body["message"]
    assert "Customer: Ana" in body["message"]


async def test_every_url_of_a_list_is_notified(receiver: Receiver, ctx: ChannelContext) -> None:
    with Receiver() as second:
        urls = [json_url(receiver), json_url(second)]
        result = await channel(ctx, urls=urls).send(make_message())
        assert result.outcome is Outcome.SENT
        assert len(receiver.requests) == 1
        assert len(second.requests) == 1


async def test_title_template_override(receiver: Receiver, ctx: ChannelContext) -> None:
    sender = channel(ctx, urls=json_url(receiver), template={"title": "Help: {{ topic|upper }}"})
    assert (await sender.send(make_message())).outcome is Outcome.SENT
    assert receiver.requests[0].json()["title"] == "Help: SALES"


@pytest.mark.parametrize("status", [400, 500, 503])
async def test_a_failed_notify_is_transient(
    receiver: Receiver, ctx: ChannelContext, status: int
) -> None:
    receiver.reply_with(status, "no")

    result = await channel(ctx, urls=json_url(receiver)).send(make_message())

    assert result.outcome is Outcome.TRANSIENT
    assert result.error is not None
    assert result.error.startswith("apprise notify: FAILURE")
    assert str(receiver.port) not in result.error  # no URL in errors
    assert len(receiver.requests) == 1  # Apprise did not retry on its own


def test_an_unknown_url_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValidationError) as caught:
        CHANNEL_TYPE.settings_model.model_validate(
            {"type": "apprise", "urls": ["json://ok.example/x", "nosuch://token-123@x"]}
        )
    assert "Apprise does not understand urls[1]" in str(caught.value)
    assert "token-123" not in str(caught.value)


def test_apprise_retries_are_refused() -> None:
    with pytest.raises(ValidationError, match="deskbell retries"):
        CHANNEL_TYPE.settings_model.model_validate(
            {"type": "apprise", "urls": "json://ok.example/x?retry=3"}
        )


# Issue 14, item 21: user text reached Apprise targets with its mentions working. It goes as
# plain text, so each service escapes its own markup, and every value from the request has
# its mentions defused, for the services that show plain text as written.
HOSTILE = "<!channel> @here @Everyone <@U123> <@&42> @all & *bold* \\n x@example.com"
DEFUSED = (
    "<\u2060!channel> @\u2060here @\u2060Everyone <\u2060@U123> <\u2060@&42> @\u2060all"
    " & *bold* \\n x@example.com"
)


async def test_user_text_arrives_with_its_mentions_defused(
    receiver: Receiver, ctx: ChannelContext
) -> None:
    message = make_message(
        {"topic": "sales", "description": HOSTILE, "customer": {"name": "@here"}}
    )

    result = await channel(ctx, urls=json_url(receiver)).send(message)

    assert result.outcome is Outcome.SENT
    body = receiver.requests[0].json()["message"]
    assert DEFUSED in body  # `\n` stays two characters: escapes are not interpreted
    assert "Customer: @\u2060here" in body
    assert "<!channel>" not in body


async def test_mattermost_gets_no_working_broadcast(
    receiver: Receiver, ctx: ChannelContext
) -> None:
    url = f"mmost://127.0.0.1:{receiver.port}/token123"
    message = make_message({"topic": "sales", "description": "@channel @all please"})

    result = await channel(ctx, urls=url).send(message)

    assert result.outcome is Outcome.SENT
    [request] = receiver.requests
    text = request.json()["text"]
    assert "@\u2060channel @\u2060all please" in text
    assert "@channel" not in text


async def test_a_templates_own_mention_is_kept(receiver: Receiver, ctx: ChannelContext) -> None:
    """Only values from the request are defused: a config author may ping on purpose."""
    template = {"body": "@here {{ description }}"}
    sender = channel(ctx, urls=json_url(receiver), template=template)

    assert (await sender.send(make_message({"topic": "s", "description": "@here"}))).outcome is (
        Outcome.SENT
    )
    assert receiver.requests[0].json()["message"] == "@here @\u2060here"


def test_slack_through_apprise_escapes_plain_text_itself() -> None:
    """What deskbell relies on for `slack://` (no local peer can stand in for hooks.slack.com):
    Apprise's Slack service, handed plain text, escapes `&`, `<`, `>`."""
    instance = apprise.Apprise()
    assert instance.add("slack://T1234567/B1234567/abcdefghijklmnopqrstuvwx")
    [service] = list(instance)
    converted = service.dialect_convert("<!channel> & <@U1>", apprise.NotifyFormat.TEXT)
    assert converted == "&lt;!channel&gt; &amp; &lt;@U1&gt;"
