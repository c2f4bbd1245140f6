"""`POST /v1/slack/interactions` on the real app: requests sent to the local fake Slack, clicks
signed as Slack signs them (slack_sdk's SignatureVerifier), claims stored in a real database,
message updates received by the fake and validated with slack_sdk's block models."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import pytest
import sqlalchemy as sa
from slack_sdk.models.blocks import Block
from slack_sdk.signature import SignatureVerifier

from deskbell.api.slack_signature import signature
from deskbell.channels.kit.slack_claim import CLAIM_ACTION_ID, CLAIMED_BLOCK_ID
from deskbell.storage.tables import requests
from deskbell.wiring import Runtime
from tests.conftest import running_app
from tests.fakes.slack import FakeSlack

SIGNING = "8f742231b10e8888abcd99yyyzzz85a5"
OTHER_SIGNING = "0000aaaabbbbccccddddeeeeffff1111"
INGEST = "ingest-" + "i" * 40


def config(slack: FakeSlack) -> str:
    return f"""
channels:
  sales-slack:
    type: slack
    webhook_url: {slack.url}
    signing_secret: {SIGNING}
  sales-bot:
    type: slack
    token: {slack.token}
    channel: C0TEST
    api_url: {slack.api_url}
    signing_secret: {SIGNING}
  unsigned-slack:
    type: slack
    webhook_url: {slack.url}
routes:
  - match: {{topic: sales}}
    to: [sales-slack]
  - match: {{topic: bot}}
    to: [sales-bot]
  - match: {{topic: plain}}
    to: [unsigned-slack]
"""


def signed(body: bytes, *, secret: str = SIGNING, age: int = 0) -> dict[str, str]:
    timestamp = str(int(time.time()) - age)
    try:
        sig = SignatureVerifier(secret).generate_signature(timestamp=timestamp, body=body)
    except UnicodeDecodeError:  # slack_sdk signs text; ours (the same, tested below) bytes
        sig = signature(secret, timestamp, body)
    assert sig is not None
    return {
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": sig,
        "Content-Type": "application/x-www-form-urlencoded",
    }


def click(
    slack: FakeSlack,
    posted: dict[str, Any],
    *,
    user: dict[str, str] | None = None,
    action_id: str = CLAIM_ACTION_ID,
    value: str | None = None,
    channel_id: str = "C0WEBHOOK",
) -> bytes:
    """A `block_actions` payload as Slack sends it for a click on `posted`'s button."""
    [button] = [
        element
        for block in posted["blocks"]
        if block["type"] == "actions"
        for element in block["elements"]
        if element.get("action_id") == CLAIM_ACTION_ID
    ]
    payload = {
        "type": "block_actions",
        "user": user or {"id": "U0ANA", "username": "ana", "name": "ana", "team_id": "T0"},
        "team": {"id": "T0", "domain": "example"},
        "container": {
            "type": "message",
            "message_ts": "1700000000.000100",
            "channel_id": channel_id,
            "is_ephemeral": False,
        },
        "channel": {"id": channel_id, "name": "sales"},
        "message": {"type": "message", "ts": "1700000000.000100", "text": posted["text"],
                    "blocks": posted["blocks"]},
        "response_url": slack.response_url,
        "actions": [
            {
                "action_id": action_id,
                "block_id": "deskbell_handoff",
                "type": "button",
                "value": value if value is not None else button["value"],
                "action_ts": "1700000001.000200",
            }
        ],
    }  # fmt: skip
    return urlencode({"payload": orjson.dumps(payload).decode()}).encode()


async def handoff_of(runtime: Runtime, request_id: str) -> tuple[str, str | None, str | None]:
    async with runtime.db.reader.connect() as conn:
        row = (
            await conn.execute(
                sa.select(
                    requests.c.handoff_state, requests.c.claimed_by, requests.c.claimed_via
                ).where(requests.c.id == request_id)
            )
        ).one()
    return row[0], row[1], row[2]


async def accept(client: httpx.AsyncClient, slack: FakeSlack, topic: str = "sales") -> str:
    answer = await client.post(
        "/v1/assistance-requests",
        json={"topic": topic, "description": "Wants a quote"},
        headers={"Authorization": f"Bearer {INGEST}"},
    )
    assert answer.status_code == 202, answer.text
    request_id: str = answer.json()["id"]
    await slack.wait_for_payloads_async(1)
    return request_id


@pytest.fixture
def runtime(make_runtime: Callable[..., Runtime], fake_slack: FakeSlack) -> Runtime:
    # API keys on: the interactions route must still need none.
    return make_runtime(config(fake_slack), api_keys=f"{INGEST}:ingest")


def validated(blocks: list[dict[str, Any]]) -> None:
    for original in blocks:
        block = Block.parse(original)
        assert block is not None
        block.validate_json()
        assert block.to_dict() == original


def test_our_signature_is_slacks() -> None:
    body = b"payload=%7B%22type%22%3A%22block_actions%22%7D"
    ours = signature(SIGNING, "1700000000", body)
    verifier = SignatureVerifier(SIGNING, clock=_FixedClock(1700000000))
    assert verifier.is_valid(body, "1700000000", ours)
    assert verifier.generate_signature(timestamp="1700000000", body=body) == ours


class _FixedClock:
    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now


async def test_a_signed_click_claims_and_replaces_the_message(
    runtime: Runtime, fake_slack: FakeSlack
) -> None:
    async with running_app(runtime) as client:
        request_id = await accept(client, fake_slack)
        [posted] = fake_slack.payloads
        validated(posted["blocks"])
        body = click(fake_slack, posted)

        answer = await client.post("/v1/slack/interactions", content=body, headers=signed(body))

        assert answer.status_code == 200
        assert await handoff_of(runtime, request_id) == ("claimed", "ana", "slack")
        [response] = await fake_slack.wait_for_responses_async(1)
    assert response["replace_original"] is True
    validated(response["blocks"])
    assert f'"{CLAIM_ACTION_ID}"' not in orjson.dumps(response["blocks"]).decode()
    [line] = [b for b in response["blocks"] if b.get("block_id") == CLAIMED_BLOCK_ID]
    assert "Claimed by *ana*" in line["elements"][0]["text"]
    assert response["text"].startswith("Claimed by ana at ")


async def test_a_web_api_message_is_updated_with_chat_update(
    runtime: Runtime, fake_slack: FakeSlack
) -> None:
    async with running_app(runtime) as client:
        request_id = await accept(client, fake_slack, topic="bot")
        [posted] = fake_slack.payloads
        body = click(fake_slack, posted, channel_id="C0TEST", user={"id": "U0BEN"})

        answer = await client.post("/v1/slack/interactions", content=body, headers=signed(body))

        assert answer.status_code == 200
        assert await handoff_of(runtime, request_id) == ("claimed", "U0BEN", "slack")
        [update] = await fake_slack.wait_for_updates_async(1)
    assert (update["channel"], update["ts"]) == ("C0TEST", "1700000000.000100")
    validated(update["blocks"])
    assert fake_slack.responses == []


async def test_a_second_claimer_is_told_who_was_first(
    runtime: Runtime, fake_slack: FakeSlack
) -> None:
    async with running_app(runtime) as client:
        request_id = await accept(client, fake_slack)
        [posted] = fake_slack.payloads
        first = click(fake_slack, posted)
        second = click(fake_slack, posted, user={"id": "U0BEN", "name": "ben"})

        answer = await client.post("/v1/slack/interactions", content=first, headers=signed(first))
        assert answer.status_code == 200
        await fake_slack.wait_for_responses_async(1)
        answer = await client.post("/v1/slack/interactions", content=second, headers=signed(second))

        assert answer.status_code == 200
        assert await handoff_of(runtime, request_id) == ("claimed", "ana", "slack")
        responses = await fake_slack.wait_for_responses_async(3)
    [note] = [r for r in responses if r.get("response_type") == "ephemeral"]
    assert note["replace_original"] is False
    assert note["text"].startswith("Already claimed by *ana* at ")


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        (lambda body: signed(body, secret=OTHER_SIGNING), "signature_invalid"),
        (lambda body: signed(body, age=6 * 60), "signature_stale"),  # a replay, 6 min late
        (
            lambda body: {**signed(body), "X-Slack-Signature": "v0=" + "0" * 64},
            "signature_invalid",
        ),
        (lambda body: {**signed(body), "X-Slack-Request-Timestamp": "soon"}, "signature_stale"),
        (lambda body: {"Content-Type": "application/x-www-form-urlencoded"}, "signature_missing"),
    ],
)
async def test_a_bad_or_old_signature_is_401_and_changes_nothing(
    runtime: Runtime,
    fake_slack: FakeSlack,
    headers: Callable[[bytes], dict[str, str]],
    code: str,
) -> None:
    async with running_app(runtime) as client:
        request_id = await accept(client, fake_slack)
        body = click(fake_slack, fake_slack.payloads[0])

        answer = await client.post("/v1/slack/interactions", content=body, headers=headers(body))

        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == code
        assert await handoff_of(runtime, request_id) == ("waiting", None, None)
    assert fake_slack.responses == []
    assert fake_slack.updates == []


async def test_a_body_changed_after_signing_is_401(runtime: Runtime, fake_slack: FakeSlack) -> None:
    async with running_app(runtime) as client:
        request_id = await accept(client, fake_slack)
        body = click(fake_slack, fake_slack.payloads[0])
        forged = click(fake_slack, fake_slack.payloads[0], user={"id": "U0EVE", "name": "eve"})

        answer = await client.post("/v1/slack/interactions", content=forged, headers=signed(body))

        assert answer.status_code == 401
        assert await handoff_of(runtime, request_id) == ("waiting", None, None)


@pytest.mark.parametrize(
    "body",
    [
        b"payload=not-json",
        b"nopayload=1",
        b"payload=%5B1%2C2%5D",  # a JSON list
        b"payload=%7B%22user%22%3A1%7D",  # no type
        b"\xff\xfe",
        b"",
        b"payload=a&payload=b",
    ],
)
async def test_a_malformed_signed_payload_is_400(
    runtime: Runtime, fake_slack: FakeSlack, body: bytes
) -> None:
    async with running_app(runtime, start_workers=False) as client:
        answer = await client.post("/v1/slack/interactions", content=body, headers=signed(body))

    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_payload"


async def test_an_oversized_body_is_413(runtime: Runtime) -> None:
    body = b"payload=" + b"x" * (600 * 1024)
    async with running_app(runtime, start_workers=False) as client:
        answer = await client.post("/v1/slack/interactions", content=body, headers=signed(body))

    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "body_too_large"


async def test_other_buttons_and_unknown_requests_claim_nothing(
    runtime: Runtime, fake_slack: FakeSlack
) -> None:
    async with running_app(runtime) as client:
        request_id = await accept(client, fake_slack)
        posted = fake_slack.payloads[0]
        other = click(fake_slack, posted, action_id="deskbell-open-conversation")
        unknown = click(fake_slack, posted, value="0190a0b0-0000-7000-8000-000000000001")
        junk = click(fake_slack, posted, value="not-an-id")

        for body in (other, unknown, junk):
            answer = await client.post("/v1/slack/interactions", content=body, headers=signed(body))
            assert answer.status_code == 200

        assert await handoff_of(runtime, request_id) == ("waiting", None, None)
        notes = await fake_slack.wait_for_responses_async(2)
    assert [n["text"] for n in notes] == ["This request is not known to deskbell."] * 2
    assert all(n["response_type"] == "ephemeral" for n in notes)


async def test_a_channel_without_a_signing_secret_sends_no_button(
    runtime: Runtime, fake_slack: FakeSlack
) -> None:
    async with running_app(runtime) as client:
        await accept(client, fake_slack, topic="plain")
    [posted] = fake_slack.payloads
    assert f'"{CLAIM_ACTION_ID}"' not in orjson.dumps(posted).decode()
