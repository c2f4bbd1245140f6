"""`GET /v1/channels` and `POST /v1/channels/{name}/test` on the real app, with real peers."""

from __future__ import annotations

from collections.abc import Callable

from standardwebhooks.webhooks import Webhook

from deskbell.wiring import Runtime
from tests.conftest import running_app
from tests.fakes.receiver import Receiver
from tests.fakes.slack import FakeSlack, Reply

READER = "reader-" + "r" * 40
ADMIN = "admin-" + "a" * 40
SECRET = "whsec_" + "a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5"


def config(slack: FakeSlack, receiver: Receiver) -> str:
    return f"""
channels:
  sales-bot:
    type: slack
    token: {slack.token}
    channel: C0TEST
    api_url: {slack.api_url}
  crm:
    type: webhook
    url: {receiver.url}
    secret: {SECRET}
    headers: {{X-Api-Key: key-do-not-show}}
    allow_private_networks: true
  blocked:
    type: webhook
    url: http://169.254.169.254/latest/meta-data/
routes:
  - match: {{topic: sales}}
    to: [sales-bot, crm]
"""


async def test_channels_are_listed_with_secrets_redacted(
    make_runtime: Callable[..., Runtime], fake_slack: FakeSlack
) -> None:
    with Receiver() as receiver:
        runtime = make_runtime(config(fake_slack, receiver))
        async with running_app(runtime, start_workers=False) as client:
            answer = await client.get("/v1/channels")
    assert answer.status_code == 200
    items = {item["name"]: item for item in answer.json()["items"]}
    assert set(items) == {"sales-bot", "crm", "blocked"}
    assert items["sales-bot"]["type"] == "slack"
    assert items["sales-bot"]["templates"] == ["header", "body", "text"]
    assert items["sales-bot"]["settings"]["channel"] == "C0TEST"
    assert items["sales-bot"]["settings"]["token"] == "**********"
    assert items["crm"]["settings"]["headers"] == {"X-Api-Key": "**********"}
    for secret in (fake_slack.token, SECRET, "key-do-not-show", receiver.url):
        assert secret not in answer.text


async def test_test_send_reaches_the_peer_and_reports_sent(
    make_runtime: Callable[..., Runtime], fake_slack: FakeSlack
) -> None:
    with Receiver() as receiver:
        runtime = make_runtime(config(fake_slack, receiver))
        async with running_app(runtime, start_workers=False) as client:
            slack = await client.post("/v1/channels/sales-bot/test")
            crm = await client.post("/v1/channels/crm/test")
        [request] = receiver.requests
    assert slack.status_code == 200
    assert slack.json()["status"] == "sent"
    assert slack.json()["error"] is None
    assert slack.json()["duration_ms"] >= 0
    assert fake_slack.payloads[0]["blocks"][0]["text"]["text"] == (
        "Assistance requested: deskbell-test"
    )
    assert crm.json() | {"duration_ms": 0} == {
        "channel": "crm",
        "type": "webhook",
        "status": "sent",
        "duration_ms": 0,
        "error": None,
        "retry_after": None,
    }
    payload = Webhook(SECRET).verify(request.body, request.headers)
    assert payload["data"]["request"]["topic"] == "deskbell-test"


async def test_test_send_reports_failures(
    make_runtime: Callable[..., Runtime], fake_slack: FakeSlack
) -> None:
    fake_slack.reply_next(Reply.api_error("not_in_channel"))
    with Receiver() as receiver:
        runtime = make_runtime(config(fake_slack, receiver))
        async with running_app(runtime, start_workers=False) as client:
            slack = await client.post("/v1/channels/sales-bot/test")
            blocked = await client.post("/v1/channels/blocked/test")
            missing = await client.post("/v1/channels/nope/test")
    assert slack.json()["status"] == "permanent"
    assert slack.json()["error"] == "Slack API error: not_in_channel"
    assert blocked.json()["status"] == "permanent"
    assert "metadata" in blocked.json()["error"]
    assert missing.status_code == 404
    assert missing.json()["error"]["details"]["known_channels"] == ["blocked", "crm", "sales-bot"]


async def test_test_send_needs_the_admin_scope(
    make_runtime: Callable[..., Runtime], fake_slack: FakeSlack
) -> None:
    with Receiver() as receiver:
        runtime = make_runtime(
            config(fake_slack, receiver), api_keys=f"{READER}:read,{ADMIN}:admin"
        )
        async with running_app(runtime, start_workers=False) as client:
            listed = await client.get("/v1/channels", headers=bearer(READER))
            refused = await client.post("/v1/channels/crm/test", headers=bearer(READER))
            allowed = await client.post("/v1/channels/crm/test", headers=bearer(ADMIN))
        sent = len(receiver.requests)
    assert listed.status_code == 200
    assert refused.status_code == 403
    assert allowed.status_code == 200
    assert sent == 1  # only the admin's test reached the receiver


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
