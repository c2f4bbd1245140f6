"""Email claim links on the real app: the link is read from the message aiosmtpd received (with
Python's email parser), its page shows the request and claims nothing, its form claims once
(`via: email`), and an expired, altered or second use is refused."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from html.parser import HTMLParser

import httpx
import pytest
import sqlalchemy as sa

from deskbell.api.claim_links import ClaimLinks
from deskbell.storage.tables import requests
from deskbell.wiring import Runtime
from tests.conftest import running_app
from tests.fakes.smtp import FakeSMTP

SECRET_KEY = "k" * 40
PUBLIC = "http://deskbell"
LINK = re.compile(r"http://deskbell/claim/[A-Za-z0-9_.\-]+")


def config(smtp: FakeSMTP) -> str:
    return f"""
channels:
  sales-email:
    type: email
    smtp_url: {smtp.url}
    from: deskbell@example.com
    to: [sales@example.com]
routes:
  - match: {{topic: sales}}
    to: [sales-email]
"""


class _Fields(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.inputs: dict[str, str] = {}
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "input" and values.get("name"):
            self.inputs[values["name"] or ""] = values.get("value") or ""
        if tag == "a" and values.get("href"):
            self.hrefs.append(values["href"] or "")


def parsed(html: str) -> _Fields:
    fields = _Fields()
    fields.feed(html)
    return fields


def bodies(mail: EmailMessage) -> dict[str, str]:
    found = {}
    for part in mail.walk():
        if part.get_content_maintype() == "text":
            assert isinstance(part, EmailMessage)
            found[part.get_content_type()] = str(part.get_content())
    return found


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


async def send_one(client: httpx.AsyncClient, smtp: FakeSMTP, description: str) -> tuple[str, str]:
    """Accept a request; (its id, the claim link of the email it produced)."""
    answer = await client.post(
        "/v1/assistance-requests", json={"topic": "sales", "description": description}
    )
    assert answer.status_code == 202, answer.text
    [mail] = await smtp.wait_for_messages_async(1)
    parts = bodies(mail.message)
    [link] = LINK.findall(parts["text/plain"])
    assert parsed(parts["text/html"]).hrefs.count(link) == 1  # the same link in the HTML part
    return answer.json()["id"], link


@pytest.fixture
def runtime(make_runtime: Callable[..., Runtime], fake_smtp: FakeSMTP) -> Runtime:
    return make_runtime(config(fake_smtp), secret_key=SECRET_KEY, public_url=PUBLIC)


async def test_the_page_shows_the_request_and_claims_nothing(
    runtime: Runtime, fake_smtp: FakeSMTP
) -> None:
    async with running_app(runtime) as client:
        request_id, link = await send_one(client, fake_smtp, "Needs <b>help</b> & a quote")

        for _ in range(3):  # a scanner, a preview, the person
            page = await client.get(link)
            assert page.status_code == 200

        assert await handoff_of(runtime, request_id) == ("waiting", None, None)
    assert "Needs &lt;b&gt;help&lt;/b&gt; &amp; a quote" in page.text
    assert "<b>help</b>" not in page.text
    assert set(parsed(page.text).inputs) == {"csrf", "name"}
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"


async def test_the_form_claims_via_email_and_a_second_use_is_refused(
    runtime: Runtime, fake_smtp: FakeSMTP
) -> None:
    async with running_app(runtime) as client:
        request_id, link = await send_one(client, fake_smtp, "Wants a quote")
        csrf = parsed((await client.get(link)).text).inputs["csrf"]

        claimed = await client.post(link, data={"csrf": csrf, "name": "Ana Pérez"})

        assert claimed.status_code == 200, claimed.text
        assert "You (Ana Pérez) have claimed this request." in claimed.text
        assert await handoff_of(runtime, request_id) == ("claimed", "Ana Pérez", "email")
        again = await client.post(link, data={"csrf": csrf, "name": "Ben"})
        same = await client.post(link, data={"csrf": csrf, "name": "Ana Pérez"})
        shown = await client.get(link)
        assert await handoff_of(runtime, request_id) == ("claimed", "Ana Pérez", "email")
    for answer in (again, same, shown):
        assert answer.status_code == 409
        assert "already claimed by Ana Pérez" in answer.text


async def test_an_expired_link_is_refused(runtime: Runtime, fake_smtp: FakeSMTP) -> None:
    async with running_app(runtime) as client:
        request_id, _ = await send_one(client, fake_smtp, "Wants a quote")
        long_ago = _Clock(datetime.now(UTC) - timedelta(days=2))
        old = ClaimLinks(SECRET_KEY, PUBLIC, 86400, long_ago).url(request_id, "x")
        csrf = ClaimLinks(SECRET_KEY, PUBLIC, 86400, long_ago).csrf_token(old.rsplit("/", 1)[1])

        shown = await client.get(old)
        posted = await client.post(old, data={"csrf": csrf, "name": "Ana"})

        assert await handoff_of(runtime, request_id) == ("waiting", None, None)
    assert shown.status_code == 410
    assert "expired" in shown.text
    assert posted.status_code in (403, 410)  # its page token has expired too


async def test_an_expired_link_with_a_fresh_form_token_is_410(
    runtime: Runtime, fake_smtp: FakeSMTP
) -> None:
    async with running_app(runtime) as client:
        request_id, _ = await send_one(client, fake_smtp, "Wants a quote")
        long_ago = _Clock(datetime.now(UTC) - timedelta(days=2))
        old = ClaimLinks(SECRET_KEY, PUBLIC, 86400, long_ago).url(request_id, "x")
        fresh = ClaimLinks(SECRET_KEY, PUBLIC, 86400, _Clock(datetime.now(UTC)))

        posted = await client.post(
            old, data={"csrf": fresh.csrf_token(old.rsplit("/", 1)[1]), "name": "Ana"}
        )

        assert posted.status_code == 410
        assert await handoff_of(runtime, request_id) == ("waiting", None, None)


@pytest.mark.parametrize(
    "alter",
    [
        lambda link: link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB"),  # signature
        lambda link: link.replace("/claim/", "/claim/x"),  # payload
        lambda link: PUBLIC + "/claim/" + "a" * 600,
        lambda link: PUBLIC + "/claim/not-a-token",
    ],
)
async def test_an_altered_link_is_400(
    runtime: Runtime, fake_smtp: FakeSMTP, alter: Callable[[str], str]
) -> None:
    async with running_app(runtime) as client:
        request_id, link = await send_one(client, fake_smtp, "Wants a quote")

        answer = await client.get(alter(link))

        assert answer.status_code == 400
        assert await handoff_of(runtime, request_id) == ("waiting", None, None)


async def test_a_link_signed_with_another_key_is_400(runtime: Runtime, fake_smtp: FakeSMTP) -> None:
    async with running_app(runtime) as client:
        request_id, _ = await send_one(client, fake_smtp, "Wants a quote")
        foreign = ClaimLinks("z" * 40, PUBLIC, 86400, _Clock(datetime.now(UTC)))

        answer = await client.get(foreign.url(request_id, "x"))

    assert answer.status_code == 400


@pytest.mark.parametrize(
    "data",
    [
        {"name": "Ana"},  # no CSRF token
        {"name": "Ana", "csrf": ""},
        {"name": "Ana", "csrf": "forged"},
        {"name": "Ana", "csrf": "OTHER"},  # a real token, but of another link's page
    ],
)
async def test_a_post_without_the_pages_token_is_403(
    runtime: Runtime, fake_smtp: FakeSMTP, data: dict[str, str]
) -> None:
    async with running_app(runtime) as client:
        request_id, link = await send_one(client, fake_smtp, "Wants a quote")
        if data.get("csrf") == "OTHER":
            links = ClaimLinks(SECRET_KEY, PUBLIC, 86400, _Clock(datetime.now(UTC)))
            other = links.token(request_id, "another-delivery")
            data = {**data, "csrf": links.csrf_token(other)}

        answer = await client.post(link, data=data)

        assert answer.status_code == 403
        assert await handoff_of(runtime, request_id) == ("waiting", None, None)


@pytest.mark.parametrize("name", ["", "   ", "a" * 200, "Ana\nBcc: x"])
async def test_a_bad_name_is_400_and_the_form_is_shown_again(
    runtime: Runtime, fake_smtp: FakeSMTP, name: str
) -> None:
    async with running_app(runtime) as client:
        request_id, link = await send_one(client, fake_smtp, "Wants a quote")
        csrf = parsed((await client.get(link)).text).inputs["csrf"]

        answer = await client.post(link, data={"csrf": csrf, "name": name})

        assert answer.status_code == 400
        assert "csrf" in parsed(answer.text).inputs
        assert await handoff_of(runtime, request_id) == ("waiting", None, None)


async def test_without_a_secret_key_no_link_and_no_page(
    make_runtime: Callable[..., Runtime], fake_smtp: FakeSMTP
) -> None:
    runtime = make_runtime(config(fake_smtp), public_url=PUBLIC)
    async with running_app(runtime) as client:
        answer = await client.post(
            "/v1/assistance-requests", json={"topic": "sales", "description": "Hi"}
        )
        assert answer.status_code == 202
        [mail] = await fake_smtp.wait_for_messages_async(1)
        page = await client.get(PUBLIC + "/claim/anything")
    assert "/claim/" not in mail.raw.decode(errors="replace")
    assert page.status_code == 404


class _Clock:
    def __init__(self, now: datetime) -> None:
        self._now = now

    def now(self) -> datetime:
        return self._now
