"""Email channel against FakeSMTP, a real aiosmtpd server on 127.0.0.1."""

from __future__ import annotations

import email
import email.policy
import socket
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from deskbell.channels.base import ChannelContext, Message
from deskbell.channels.email import CHANNEL_TYPE, EmailChannel, build_outgoing
from deskbell.channels.kit.smtp import parse_smtp_url
from deskbell.models import Outcome
from tests.channels.contract import Peer, SmtpPeer
from tests.fakes import make_message
from tests.fakes.smtp import FakeSMTP

FULL_REQUEST = {
    "topic": "sales",
    "description": "Wants a quote for 40 seats",
    "customer": {"name": "Ana Pérez", "email": "ana@example.com", "phone": "+34 600"},
    "conversation_url": "https://chat.example.com/c/123",
    "metadata": {"plan": "pro"},
}


def contract_peer() -> Peer:
    """For tests/channels/test_contract.py: the password in the URL is the secret."""
    return SmtpPeer(lambda url: {"smtp_url": url})


BUILD_SETTINGS = {
    "type": "email",
    "smtp_url": "smtp://localhost:25",
    "from": "Deskbell <deskbell@example.com>",
    "to": ["Ventas <ventas@example.com>"],
    "cc": ["lead@example.com"],
}


def build_check(message: Message) -> None:
    """For tests/channels/test_every_body_sends.py: the message builds for a server with and
    without SMTPUTF8, as 7- and 8-bit bytes, and parses back with a one-line subject."""
    settings = CHANNEL_TYPE.settings_model.model_validate(BUILD_SETTINGS)
    ctx = ChannelContext(http=httpx.AsyncClient())  # never opened: the build does no I/O
    for smtputf8 in (False, True):
        outgoing = build_outgoing(message, settings, ctx, smtputf8=smtputf8)
        for eightbit in (False, True):
            raw = outgoing.as_bytes(eightbit=eightbit)
            if not outgoing.smtputf8:
                assert raw.split(b"\r\n\r\n", 1)[0].isascii()
            parsed = email.message_from_bytes(raw, policy=email.policy.default)
            assert parsed.get_content_type() == "multipart/alternative"
            assert "\n" not in str(parsed["Subject"])


def settings_for(url: str, **extra: Any) -> Any:
    block = {
        "type": "email",
        "smtp_url": url,
        "from": "Deskbell <deskbell@example.com>",
        "to": ["sales@example.com"],
        **extra,
    }
    return CHANNEL_TYPE.settings_model.model_validate(block)


def channel(url: str, ctx: ChannelContext, **extra: Any) -> EmailChannel:
    built = CHANNEL_TYPE.factory("sales-email", settings_for(url, **extra), ctx)
    assert isinstance(built, EmailChannel)
    return built


def parts(message: EmailMessage) -> dict[str, str]:
    """Content type -> decoded text of each leaf part."""
    return {
        part.get_content_type(): part.get_content()
        for part in message.walk()
        if not part.is_multipart()
    }


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections but never sends the SMTP greeting."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


async def test_message_arrives_with_both_parts_and_headers(
    fake_smtp: FakeSMTP, ctx: ChannelContext
) -> None:
    message = make_message(FULL_REQUEST, delivery_id="dlv-42")

    result = await channel(fake_smtp.url, ctx).send(message)

    assert result.outcome is Outcome.SENT
    [mail] = fake_smtp.messages
    assert mail.mail_from == "deskbell@example.com"
    assert mail.rcpt_tos == ["sales@example.com"]
    received = mail.message
    assert received["Subject"] == "[deskbell] sales: Wants a quote for 40 seats"
    assert received["From"] == "Deskbell <deskbell@example.com>"
    assert received["To"] == "sales@example.com"
    assert received["Reply-To"] == "Ana Pérez <ana@example.com>"
    assert received["Message-ID"] == "<dlv-42@deskbell>"
    assert received.get_content_type() == "multipart/alternative"
    bodies = parts(received)
    assert list(bodies) == ["text/plain", "text/html"]
    for body in bodies.values():
        assert "Wants a quote for 40 seats" in body
        assert "+34 600" in body
        assert "pro" in body
    assert "Conversation: https://chat.example.com/c/123" in bodies["text/plain"]
    assert '<a href="https://chat.example.com/c/123">' in bodies["text/html"]


async def test_subject_is_one_line_and_cut_at_60_characters(
    fake_smtp: FakeSMTP, ctx: ChannelContext
) -> None:
    description = "Line one\r\nBcc: victim@example.com\nX-Evil:\x00 yes\u2028" + "x" * 100
    message = make_message({"topic": "sales", "description": description})

    await channel(fake_smtp.url, ctx).send(message)

    [mail] = fake_smtp.messages
    subject = mail.message["Subject"]
    assert not any(char in subject for char in "\r\n\x00\u2028")
    # The stdlib folds a long header before an encoded word and unfolding leaves two spaces
    # there; that is cosmetic, so compare with runs of spaces collapsed.
    words = " ".join(subject.split())
    assert words.startswith("[deskbell] sales: Line one Bcc: victim@example.com X-Evil: yes x")
    assert words.endswith("x\u2026")
    assert len(words) == len("[deskbell] sales: ") + 60
    assert mail.message["Bcc"] is None
    assert mail.message["X-Evil"] is None
    assert mail.rcpt_tos == ["sales@example.com"]


async def test_html_part_escapes_user_text(fake_smtp: FakeSMTP, ctx: ChannelContext) -> None:
    message = make_message(
        {
            "topic": "sales",
            "description": "<script>alert(1)</script>",
            "customer": {"name": '<img src=x onerror="alert(2)">'},
            "metadata": {"<b>key</b>": "<i>value</i>"},
        }
    )

    await channel(fake_smtp.url, ctx).send(message)

    html = parts(fake_smtp.messages[0].message)["text/html"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>" not in html
    assert "<img" not in html
    assert "&lt;b&gt;key&lt;/b&gt;" in html
    plain = parts(fake_smtp.messages[0].message)["text/plain"]
    assert "<script>alert(1)</script>" in plain  # plain text shows it as written


async def test_no_reply_to_without_customer_email(fake_smtp: FakeSMTP, ctx: ChannelContext) -> None:
    await channel(fake_smtp.url, ctx).send(
        make_message({"topic": "sales", "description": "Hi", "customer": {"name": "Ana"}})
    )

    [mail] = fake_smtp.messages
    assert mail.message["Reply-To"] is None


@pytest.mark.parametrize(("code", "outcome"), [(550, Outcome.PERMANENT), (450, Outcome.TRANSIENT)])
async def test_refused_recipient(
    fake_smtp: FakeSMTP, ctx: ChannelContext, code: int, outcome: Outcome
) -> None:
    fake_smtp.reject_all_recipients(code)

    result = await channel(fake_smtp.url, ctx).send(make_message())

    assert result.outcome is outcome
    assert result.error is not None
    assert result.error.startswith(f"rejected recipient: sales@example.com: {code}")
    assert fake_smtp.messages == []


async def test_partly_refused_recipients_still_count_as_sent(
    fake_smtp: FakeSMTP, ctx: ChannelContext
) -> None:
    fake_smtp.reject_recipient("gone@example.com")

    result = await channel(fake_smtp.url, ctx, to=["gone@example.com", "sales@example.com"]).send(
        make_message()
    )

    assert result.outcome is Outcome.SENT
    assert [mail.rcpt_tos for mail in fake_smtp.messages] == [["sales@example.com"]]


@pytest.mark.parametrize(
    ("reply", "outcome"),
    [("554 5.6.0 Message rejected", Outcome.PERMANENT), ("451 4.3.0 Try later", Outcome.TRANSIENT)],
)
async def test_data_refused(
    fake_smtp: FakeSMTP, ctx: ChannelContext, reply: str, outcome: Outcome
) -> None:
    fake_smtp.reply_to_data(reply)

    result = await channel(fake_smtp.url, ctx).send(make_message())

    assert result.outcome is outcome
    assert result.error == f"SMTP error: {reply}"


async def test_login_with_credentials_from_the_url(ctx: ChannelContext) -> None:
    with FakeSMTP(credentials=("bot@example.com", "p@ss:word")) as smtp:
        url = f"smtp://bot%40example.com:p%40ss%3Aword@127.0.0.1:{smtp.port}"
        result = await channel(url, ctx).send(make_message())

        assert result.outcome is Outcome.SENT
        assert smtp.logins == ["bot@example.com"]
        assert len(smtp.messages) == 1


async def test_wrong_password_is_permanent(ctx: ChannelContext) -> None:
    with FakeSMTP(credentials=("bot", "right")) as smtp:
        result = await channel(f"smtp://bot:wrong@127.0.0.1:{smtp.port}", ctx).send(make_message())

        assert result.outcome is Outcome.PERMANENT
        assert result.error is not None
        assert result.error.startswith("authentication failed: 535")
        assert "wrong" not in result.error
        assert smtp.messages == []


async def test_required_starttls_is_never_skipped(fake_smtp: FakeSMTP, ctx: ChannelContext) -> None:
    # FakeSMTP does not offer STARTTLS: with starttls: true nothing may go out in clear.
    result = await channel(fake_smtp.url, ctx, starttls=True).send(make_message())

    assert result.outcome is Outcome.TRANSIENT
    assert result.error is not None
    assert "STARTTLS" in result.error
    assert fake_smtp.messages == []


async def test_silent_server_is_a_transient_timeout(
    silent_server: int, ctx: ChannelContext
) -> None:
    result = await channel(f"smtp://127.0.0.1:{silent_server}", ctx, timeout=0.3).send(
        make_message()
    )

    assert result.outcome is Outcome.TRANSIENT
    assert result.error is not None
    assert result.error.startswith("timeout")


@pytest.mark.parametrize(
    ("url", "starttls", "expected"),
    [
        ("smtp://mail.example.com", False, ("mail.example.com", 25, None, None, False, False)),
        ("smtp://mail.example.com", True, ("mail.example.com", 587, None, None, False, True)),
        ("smtps://u:p@mail.example.com", False, ("mail.example.com", 465, "u", "p", True, False)),
        ("smtp://a%40b:p%2F@[::1]:2525/", False, ("::1", 2525, "a@b", "p/", False, False)),
    ],
)
def test_parse_smtp_url(url: str, starttls: bool, expected: tuple[Any, ...]) -> None:
    target = parse_smtp_url(url, starttls=starttls)
    assert (
        target.host,
        target.port,
        target.username,
        target.password,
        target.use_tls,
        target.start_tls,
    ) == expected
    assert "password" not in repr(target)


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"smtp_url": "http://mail.example.com"}, "smtp:// or smtps://"),
        ({"smtp_url": "smtps://u:hunter2@mail.example.com", "starttls": True}, "smtp:// only"),
        ({"smtp_url": "smtp://u:hunter2@mail.example.com:99999"}, "invalid port"),
        ({"smtp_url": "smtp://u:hunter2@mail.example.com/?starttls=1"}, "no path or query"),
        ({"to": []}, "at least 1"),
        ({"to": ["not-an-address"]}, "email address"),
        ({"from": "a@example.com\r\nBcc: victim@example.com"}, "one line"),
    ],
)
def test_invalid_settings(block: dict[str, Any], message: str) -> None:
    base = {"type": "email", "smtp_url": "smtp://mail.example.com", "from": "a@example.com"}
    with pytest.raises(ValidationError) as caught:
        CHANNEL_TYPE.settings_model.model_validate({**base, "to": ["b@example.com"], **block})
    assert message in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_from_key() -> None:
    settings = settings_for("smtp://user:hunter2@mail.example.com")
    assert settings.from_ == "Deskbell <deskbell@example.com>"
    assert settings.model_dump(by_alias=True)["from"] == settings.from_


async def test_cc_and_bcc_reach_the_envelope_but_bcc_no_header(
    fake_smtp: FakeSMTP, ctx: ChannelContext
) -> None:
    sender = channel(fake_smtp.url, ctx, cc=["lead@example.com"], bcc=["audit@example.com"])

    assert (await sender.send(make_message())).outcome is Outcome.SENT

    [mail] = fake_smtp.messages
    assert sorted(mail.rcpt_tos) == ["audit@example.com", "lead@example.com", "sales@example.com"]
    assert mail.message["Cc"] == "lead@example.com"
    assert mail.message["Bcc"] is None
    assert b"audit@example.com" not in mail.raw


async def test_threading_headers(fake_smtp: FakeSMTP, ctx: ChannelContext) -> None:
    sender = channel(fake_smtp.url, ctx)
    await sender.send(make_message(delivery_id="dlv-1", request_id="req-9"))
    await sender.send(make_message(delivery_id="dlv-2", request_id="req-9"))

    first, second = (mail.message for mail in fake_smtp.messages)
    assert first["Message-ID"] == "<dlv-1@deskbell>"
    assert second["Message-ID"] == "<dlv-2@deskbell>"
    assert first["References"] == second["References"] == "<request-req-9@deskbell>"
    assert first["Auto-Submitted"] == "auto-generated"


async def test_subject_template_is_rendered_on_one_line(
    fake_smtp: FakeSMTP, ctx: ChannelContext
) -> None:
    template = {"subject": "[{{ topic }}]\n{{ customer.name or 'Someone' }} needs help\r\nBcc: x"}
    sender = channel(fake_smtp.url, ctx, template=template)

    await sender.send(make_message(FULL_REQUEST))

    [mail] = fake_smtp.messages
    assert mail.message["Subject"] == "[sales] Ana Pérez needs help Bcc: x"
    assert mail.message["Bcc"] is None


@pytest.mark.parametrize("key", ["cc", "bcc"])
def test_cc_and_bcc_are_validated(key: str) -> None:
    with pytest.raises(ValidationError, match=key):
        settings_for("smtp://localhost", **{key: ["not-an-address"]})


# Non-ASCII addresses (issue 14): a customer's `josé@example.com` or `ana@exämple.com` passed
# ingest, then every attempt raised UnicodeEncodeError, was retried as transient and opened
# the channel's breaker. Each is now sent, or refused once as permanent, naming why.


def utf8_parsed(raw: bytes) -> EmailMessage:
    """The headers of an RFC 6532 message, parsed as UTF-8 (the bytes parser reads them as
    ASCII with surrogate escapes); read its 8bit body parts from `ReceivedMail.message`."""
    text = raw.decode("utf-8").replace("\r\n", "\n")
    return email.message_from_string(text, policy=email.policy.default)


def headers_of(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0]


def customer(email_address: str) -> dict[str, Any]:
    return {
        "topic": "sales",
        "description": "Hola",
        "customer": {"name": "José Núñez", "email": email_address},
    }


@pytest.mark.parametrize("smtputf8", [False, True], ids=["plain", "smtputf8"])
async def test_a_non_ascii_customer_domain_goes_as_idna(
    ctx: ChannelContext, smtputf8: bool
) -> None:
    with FakeSMTP(smtputf8=smtputf8) as smtp:
        result = await channel(smtp.url, ctx).send(make_message(customer("ana@exämple.com")))

        assert result.outcome is Outcome.SENT
        [mail] = smtp.messages
    [reply_to] = mail.message["Reply-To"].addresses
    assert reply_to.addr_spec == "ana@xn--exmple-cua.com"  # ASCII: no hop needs SMTPUTF8
    assert reply_to.display_name == "José Núñez"
    assert headers_of(mail.raw).isascii()  # the name as an RFC 2047 encoded word


async def test_a_non_ascii_local_part_is_sent_as_utf8_when_the_server_offers_smtputf8(
    ctx: ChannelContext,
) -> None:
    with FakeSMTP(smtputf8=True) as smtp:
        result = await channel(smtp.url, ctx).send(make_message(customer("josé@example.com")))

        assert result.outcome is Outcome.SENT
        [mail] = smtp.messages
    assert "Reply-To: José Núñez <josé@example.com>".encode() in mail.raw  # RFC 6532 UTF-8
    received = utf8_parsed(mail.raw)
    [reply_to] = received["Reply-To"].addresses
    assert (reply_to.display_name, reply_to.addr_spec) == ("José Núñez", "josé@example.com")
    assert "josé@example.com" in parts(mail.message)["text/plain"]  # an 8bit body part


async def test_without_smtputf8_a_non_ascii_customer_local_part_leaves_out_reply_to(
    fake_smtp: FakeSMTP, ctx: ChannelContext
) -> None:
    result = await channel(fake_smtp.url, ctx).send(make_message(customer("josé@example.com")))

    assert result.outcome is Outcome.SENT
    [mail] = fake_smtp.messages
    assert mail.message["Reply-To"] is None  # cannot be written without SMTPUTF8
    assert headers_of(mail.raw).isascii()
    assert "josé@example.com" in parts(mail.message)["text/plain"]  # the staff still see it


async def test_a_configured_non_ascii_recipient_needs_smtputf8(ctx: ChannelContext) -> None:
    with FakeSMTP() as plain, FakeSMTP(smtputf8=True) as utf8:
        refused = await channel(plain.url, ctx, to=["josé@example.com"]).send(make_message())
        sent = await channel(utf8.url, ctx, to=["josé@exämple.com"]).send(make_message())

        assert refused.outcome is Outcome.PERMANENT
        assert refused.error is not None
        assert "'josé@example.com'" in refused.error
        assert "SMTPUTF8" in refused.error
        assert plain.messages == []
        assert sent.outcome is Outcome.SENT
        [mail] = utf8.messages
    assert mail.rcpt_tos == ["josé@exämple.com"]
    assert [a.addr_spec for a in utf8_parsed(mail.raw)["To"].addresses] == ["josé@exämple.com"]


async def test_a_configured_non_ascii_domain_goes_as_idna_in_envelope_and_header(
    fake_smtp: FakeSMTP, ctx: ChannelContext
) -> None:
    sender = channel(fake_smtp.url, ctx, to=["Ventas <ventas@exämple.com>"])

    assert (await sender.send(make_message())).outcome is Outcome.SENT

    [mail] = fake_smtp.messages
    assert mail.rcpt_tos == ["ventas@xn--exmple-cua.com"]
    assert mail.message["To"] == "Ventas <ventas@xn--exmple-cua.com>"
