"""The fakes must refuse what the real services refuse, or channel tests prove nothing."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from tests.fakes import wait_until_async
from tests.fakes.slack import FakeSlack, Reply, invalid_reason
from tests.fakes.smtp import FakeSMTP


@pytest.mark.parametrize(
    ("content_type", "body", "reason"),
    [
        ("text/plain", b'{"text": "hi"}', "content type is not application/json"),
        ("application/json", b"{not json", "body is not JSON"),
        ("application/json", b'["text"]', "body is not a JSON object"),
        ("application/json", b'{"text": "  "}', "missing non-empty text"),
        ("application/json", b'{"blocks": []}', "missing non-empty text"),
        ("application/json", b'{"text": "x", "blocks": {}}', "blocks must be a list"),
        ("application/json", b'{"text": "x", "blocks": [{"text": 1}]}', "blocks must be a list"),
        (
            "application/json; charset=utf-8",
            b'{"text": "x", "blocks": [{"type": "divider"}]}',
            None,
        ),
    ],
)
def test_slack_payload_rules(content_type: str, body: bytes, reason: str | None) -> None:
    found = invalid_reason(content_type, body)
    assert found == reason if reason is None else (found or "").startswith(reason)


async def test_fake_slack_answers_invalid_payload(
    fake_slack: FakeSlack, http_client: httpx.AsyncClient
) -> None:
    fake_slack.reply_with(503)  # validation comes first, whatever the reply mode

    bad = await http_client.post(fake_slack.url, json={"text": ""})
    wrong_method = await http_client.get(fake_slack.url)

    assert (bad.status_code, bad.text) == (400, "invalid_payload")
    assert wrong_method.status_code == 400
    assert fake_slack.payloads == []
    assert [r.status for r in fake_slack.requests] == [400, 400]


async def test_fake_slack_queued_replies_come_first(
    fake_slack: FakeSlack, http_client: httpx.AsyncClient
) -> None:
    fake_slack.reply_next(Reply(503), Reply(429, retry_after=3))
    statuses = []
    for _ in range(3):
        answer = await http_client.post(fake_slack.url, json={"text": "hi"})
        statuses.append((answer.status_code, answer.headers.get("retry-after")))

    assert statuses == [(503, None), (429, "3"), (200, None)]
    assert fake_slack.payloads == [{"text": "hi"}]


async def test_fake_slack_takes_posts_from_another_process(fake_slack: FakeSlack) -> None:
    script = (
        "import httpx, sys; r = httpx.post(sys.argv[1], json={'text': 'from afar'}); "
        "sys.exit(0 if r.text == 'ok' else 1)"
    )
    done = subprocess.run([sys.executable, "-c", script, fake_slack.url], check=False)

    assert done.returncode == 0
    assert (await fake_slack.wait_for_payloads_async(1)) == [{"text": "from afar"}]


async def test_wait_until_async_reports_what_it_waited_for() -> None:
    with pytest.raises(AssertionError, match=r"timed out after 0\.05s waiting for the moon"):
        await wait_until_async(lambda: False, timeout=0.05, what="the moon")


def test_fake_smtp_records_and_rejects() -> None:
    import smtplib

    with FakeSMTP() as smtp:
        smtp.reject_recipient("Gone@Example.com")
        with smtplib.SMTP(smtp.host, smtp.port, timeout=5) as client:
            refused = client.sendmail(
                "a@example.com",
                ["gone@example.com", "b@example.com"],
                b"Subject: hi\r\n\r\nbody\r\n",
            )
        [mail] = smtp.wait_for_messages(1)

    assert set(refused) == {"gone@example.com"}
    assert refused["gone@example.com"][0] == 550
    assert mail.rcpt_tos == ["b@example.com"]
    assert mail.message["Subject"] == "hi"
    assert mail.message.get_content() == "body\n"
