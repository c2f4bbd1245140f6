"""Email over SMTP: one message with a plain-text and an HTML part per delivery.

Config block:

    pricing-email:
      type: email
      smtp_url: ${SMTP_URL}        # see below
      starttls: false              # true: upgrade a smtp:// connection with STARTTLS
      from: deskbell@example.com   # or "Deskbell <deskbell@example.com>"
      to: [pricing@example.com]
      cc: [sales-lead@example.com] # optional, shown to every recipient
      bcc: [audit@example.com]     # optional, receives it without being shown
      template:                    # optional overrides: subject, text, html (see render.py)
        subject: "[{{ topic }}] {{ customer.name or 'A customer' }} needs help"

`smtp_url` picks the transport by its scheme, and `starttls` is the one other switch:

- `smtp://[user:pass@]host[:port]`: plain SMTP, port 25 by default. With `starttls: true`
  the connection must be upgraded with STARTTLS (port 587 by default) and the send fails if
  the server does not offer it. With `starttls: false` no upgrade is attempted, not even an
  opportunistic one, so what goes over the wire is exactly what the config says.
- `smtps://[user:pass@]host[:port]`: TLS from the first byte (implicit TLS), port 465 by
  default; `starttls` must stay false.

User and password are percent-decoded (`%40` for `@`). Certificates are always verified.
The URL holds a password, so it is a `SecretStr` and never appears in an error message.

Non-ASCII addresses (kit/addresses.py): IDNA domains always; a non-ASCII local part travels as
UTF-8 when the server offers SMTPUTF8, else a configured one makes the delivery dead (naming
why) and a customer's is left out of Reply-To. SMTP plumbing (URL, error classes): kit/smtp.py.

Claim link (SPEC §9): with DESKBELL_SECRET_KEY set, both parts carry `claim_url`, a signed,
expiring, single-use link to a page whose button claims the request (api/claim_links.py);
a link scanner that follows it claims nothing. Without the key there is no link.

Threading: `Message-ID` is derived from the delivery id, so a retried send that did arrive twice
is recognisable as the same message; `References` names one id per request, so every email
about a request (a fallback, a manual retry) threads together; `Auto-Submitted` keeps
auto-responders from answering.
"""

from __future__ import annotations

import asyncio
import email.policy
import email.utils
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Any, ClassVar, Literal

import aiosmtplib
from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic.networks import validate_email

from deskbell.channels.base import (
    ChannelContext,
    ChannelSettings,
    ChannelType,
    Message,
    SendResult,
    building,
)
from deskbell.channels.kit import addresses
from deskbell.channels.kit import render as templates
from deskbell.channels.kit.render import Mode, TemplateSpec
from deskbell.channels.kit.smtp import SmtpTarget, classify_smtp_error, parse_smtp_url
from deskbell.channels.kit.text import single_line
from deskbell.errors import UnsendableMessage

log = logging.getLogger(__name__)

SUBJECT_PREFIX = "[deskbell]"
SUBJECT_LIMIT = 250
_MESSAGE_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def _address(value: str) -> str:
    """A mailbox (`a@b` or `Name <a@b>`), refused when it could smuggle a header line."""
    if value != single_line(value):
        raise ValueError("must be one line without control characters")
    validate_email(value)
    return value


class EmailSettings(ChannelSettings):
    # Only the alias `from` is accepted in config; `from_` is the Python attribute.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    type: Literal["email"]
    smtp_url: SecretStr
    starttls: bool = False
    from_: str = Field(alias="from")
    to: list[str] = Field(min_length=1)
    cc: list[str] = Field(default_factory=list)
    bcc: list[str] = Field(default_factory=list)

    CLAIM_LINKS: ClassVar[bool] = True  # the recipients are the people who may claim
    TEMPLATES: ClassVar[Mapping[str, TemplateSpec]] = {
        "subject": TemplateSpec("email_subject.txt"),
        "text": TemplateSpec("message.txt"),
        "html": TemplateSpec("email.html", Mode.HTML),
    }
    EXAMPLE: ClassVar[Mapping[str, Any]] = {
        "type": "email",
        "smtp_url": "smtp://mail.example.com",
        "from": "deskbell@example.com",
        "to": ["sales@example.com"],
    }

    @field_validator("from_")
    @classmethod
    def _from_address(cls, value: str) -> str:
        return _address(value)

    @field_validator("to", "cc", "bcc")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        return [_address(item) for item in value]

    @model_validator(mode="after")
    def _parsable_url(self) -> EmailSettings:
        self.target()  # raises ValueError with a message that does not repeat the URL
        return self

    def target(self) -> SmtpTarget:
        """Where and how to connect, from `smtp_url` and `starttls`."""
        return parse_smtp_url(self.smtp_url.get_secret_value(), starttls=self.starttls)


def _render(name: str, message: Message, settings: EmailSettings) -> str:
    return templates.render(name, message, settings.TEMPLATES, settings.template)


def subject(message: Message, settings: EmailSettings) -> str:
    """The `subject` template on one line (default: `[deskbell] topic: first 60 characters of
    the description`); a template that renders blank falls back to `[deskbell] topic`."""
    rendered = single_line(_render("subject", message, settings), SUBJECT_LIMIT)
    return rendered or f"{SUBJECT_PREFIX} {message.request.topic}"


def message_id(delivery_id: str) -> str:
    """Stable per delivery, so a retried send that did arrive twice can be spotted as one."""
    local = _MESSAGE_ID_UNSAFE.sub("-", delivery_id) or "delivery"
    return f"<{local}@deskbell>"


def thread_id(request_id: str) -> str:
    """One id per request, named in `References` so its emails thread together."""
    local = _MESSAGE_ID_UNSAFE.sub("-", request_id) or "request"
    return f"<request-{local}@deskbell>"


@dataclass(frozen=True)
class Rendered:
    """The three templates of one message, rendered before connecting: a template that fails
    costs no SMTP session."""

    subject: str
    text: str
    html: str


def render_parts(message: Message, settings: EmailSettings) -> Rendered:
    return Rendered(
        subject(message, settings),
        _render("text", message, settings),
        _render("html", message, settings),
    )


@dataclass(frozen=True)
class Outgoing:
    """A message ready for one SMTP server: the MIME message and its envelope."""

    mail: EmailMessage
    sender: str
    recipients: list[str]
    smtputf8: bool  # some address is UTF-8: needs the server's SMTPUTF8 (RFC 6531)

    def as_bytes(self, *, eightbit: bool = True) -> bytes:
        """The message as sent: UTF-8 headers only when an address needs them (RFC 6532),
        else RFC 2047 encoded words; 7-bit transfer encodings for a server without 8BITMIME."""
        policy = email.policy.SMTPUTF8 if self.smtputf8 else email.policy.SMTP
        return self.mail.as_bytes(policy=policy if eightbit else policy.clone(cte_type="7bit"))


def build_outgoing(
    message: Message,
    settings: EmailSettings,
    ctx: ChannelContext,
    *,
    smtputf8: bool,
    rendered: Rendered | None = None,
) -> Outgoing:
    """The MIME message (plain text first, HTML second) and its envelope, for a server that
    does (`smtputf8=True`) or does not offer SMTPUTF8 (kit/addresses.py says how each address is
    written). A configured address this server cannot take raises UnsendableMessage; the
    customer's address, only a Reply-To convenience, is then left out (the body shows it).

    Every header value that carries user text goes through `single_line`; the HTML part is
    rendered with autoescaping on, so `<script>` in a description arrives as text.
    """
    parts = rendered if rendered is not None else render_parts(message, settings)
    sender = addresses.envelope_address(settings.from_, smtputf8=smtputf8)
    recipients = [
        addresses.envelope_address(item, smtputf8=smtputf8)
        for item in (*settings.to, *settings.cc, *settings.bcc)  # Bcc: envelope only
    ]
    header_boxes: dict[str, list[Address]] = {}
    for header, values in (("From", [settings.from_]), ("To", settings.to), ("Cc", settings.cc)):
        found = [
            addresses.header_mailbox(*addresses.split_mailbox(v), smtputf8=smtputf8) for v in values
        ]
        # None cannot happen here: the envelope above refused what this server cannot take.
        header_boxes[header] = [box for box in found if box is not None]
    customer = message.request.customer
    if customer is not None and customer.email:
        reply_to = addresses.header_mailbox(
            single_line(customer.name or "", 100), customer.email, smtputf8=smtputf8
        )
        if reply_to is not None:
            header_boxes["Reply-To"] = [reply_to]
    every_box = [box for boxes in header_boxes.values() for box in boxes]
    utf8 = not (addresses.is_ascii(every_box) and all(r.isascii() for r in (sender, *recipients)))
    # A UTF-8 addr-spec is a defect to a policy without utf8 (RFC 6532 needs it on).
    mail = EmailMessage(
        policy=email.policy.default.clone(utf8=True) if utf8 else email.policy.default
    )
    mail["Subject"] = parts.subject
    for header, mailboxes in header_boxes.items():
        if mailboxes:
            mail[header] = mailboxes
    mail["Date"] = email.utils.format_datetime(ctx.clock.now())
    mail["Message-ID"] = message_id(message.delivery_id)
    mail["References"] = thread_id(message.request_id)
    mail["Auto-Submitted"] = "auto-generated"
    mail["X-Deskbell-Request-Id"] = single_line(message.request_id, 200)
    mail["X-Deskbell-Topic"] = message.request.topic
    mail.set_content(parts.text)
    mail.add_alternative(parts.html, subtype="html")
    return Outgoing(mail, sender, recipients, utf8)


def build_email(
    message: Message, settings: EmailSettings, ctx: ChannelContext, *, smtputf8: bool = False
) -> EmailMessage:
    """Just the MIME message of `build_outgoing` (tests of what a message carries)."""
    return build_outgoing(message, settings, ctx, smtputf8=smtputf8).mail


class EmailChannel:
    """Sends one email per delivery with aiosmtplib; SMTP failures are classified by
    `classify_smtp_error` (5xx and refused recipients permanent, the rest transient).

    The templates are rendered before connecting; the addresses are written once the server
    has said whether it offers SMTPUTF8. Either step failing is the message's fault:
    permanent, reported as such, never a crash retried against the channel."""

    def __init__(self, name: str, settings: EmailSettings, ctx: ChannelContext) -> None:
        self.name = name
        self._settings = settings
        self._ctx = ctx
        self._target = settings.target()

    async def send(self, message: Message) -> SendResult:
        settings = self._settings
        try:
            with building():
                rendered = render_parts(message, settings)
        except UnsendableMessage as exc:
            return SendResult.unsendable(exc)
        try:
            # aiosmtplib's timeout is per command; the outer one bounds the whole send.
            async with asyncio.timeout(settings.timeout), self._client() as smtp:
                if smtp.is_ehlo_or_helo_needed:
                    await smtp.ehlo()
                eightbit = smtp.supports_extension("8bitmime")
                try:
                    with building():
                        outgoing = build_outgoing(
                            message,
                            settings,
                            self._ctx,
                            smtputf8=smtp.supports_extension("smtputf8"),
                            rendered=rendered,
                        )
                        raw = outgoing.as_bytes(eightbit=eightbit)
                except UnsendableMessage as exc:
                    return SendResult.unsendable(exc)
                options = ["SMTPUTF8"] if outgoing.smtputf8 else []
                options += ["BODY=8BITMIME"] if eightbit else []
                refused, _ = await smtp.sendmail(
                    outgoing.sender, outgoing.recipients, raw, mail_options=options
                )
        except (aiosmtplib.SMTPException, OSError) as exc:  # TimeoutError is an OSError
            return classify_smtp_error(exc)
        if refused:
            # Some recipients got it; sending again would duplicate it for them.
            log.warning("channel %s: recipients refused: %s", self.name, sorted(refused))
        return SendResult.sent()

    def _client(self) -> aiosmtplib.SMTP:
        target = self._target
        return aiosmtplib.SMTP(
            hostname=target.host,
            port=target.port,
            username=target.username,
            password=target.password,
            use_tls=target.use_tls,
            start_tls=target.start_tls,
            timeout=self._settings.timeout,
        )


CHANNEL_TYPE = ChannelType(name="email", settings_model=EmailSettings, factory=EmailChannel)
