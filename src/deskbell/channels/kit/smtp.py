"""SMTP plumbing for the email channel: where to connect (`smtp_url` + `starttls`) and what a
failed send means for the retry stage. The URL rules are in channels/email.py's docstring."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import aiosmtplib

from deskbell.channels.base import SendResult


@dataclass(frozen=True)
class SmtpTarget:
    """Where and how to connect; the password is only ever handed to aiosmtplib."""

    host: str
    port: int
    username: str | None
    password: str | None = field(repr=False)
    use_tls: bool
    start_tls: bool


def parse_smtp_url(url: str, *, starttls: bool = False) -> SmtpTarget:
    """`smtp://` or `smtps://[user:pass@]host[:port]` as a SmtpTarget (rules in the module
    docstring). Errors never repeat the URL: it may hold a password."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps"):
        raise ValueError("smtp_url must start with smtp:// or smtps://")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("smtp_url takes no path or query; use the starttls key for STARTTLS")
    if not parts.hostname:
        raise ValueError("smtp_url has no host")
    try:
        explicit_port = parts.port
    except ValueError:
        raise ValueError("smtp_url has an invalid port") from None
    implicit_tls = parts.scheme == "smtps"
    if implicit_tls and starttls:
        raise ValueError("starttls applies to smtp:// only; smtps:// is TLS already")
    default_port = 465 if implicit_tls else 587 if starttls else 25
    return SmtpTarget(
        host=parts.hostname,
        port=explicit_port or default_port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        use_tls=implicit_tls,
        start_tls=starttls,
    )


def classify_smtp_error(exc: Exception) -> SendResult:
    """What a failed SMTP send means for the retry stage.

    5xx replies are final (a refused recipient or sender, failed authentication, a rejected
    message); 4xx replies, timeouts and connection failures may clear up. Recipients refused
    with 4xx codes only (greylisting, full mailbox) are therefore transient too.
    """
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        refusals = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
        detail = f"rejected recipient: {refusals}"[:300]
        if any(r.code >= 500 for r in exc.recipients):
            return SendResult.permanent(detail)
        return SendResult.transient(detail)
    if isinstance(exc, TimeoutError):
        return SendResult.transient(f"timeout: {type(exc).__name__}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        what = (
            "authentication failed"
            if isinstance(exc, aiosmtplib.SMTPAuthenticationError)
            else "SMTP error"
        )
        detail = f"{what}: {exc.code} {exc.message}"[:300]
        return SendResult.permanent(detail) if exc.code >= 500 else SendResult.transient(detail)
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        # The server lacks what the config requires (STARTTLS, AUTH): config, not weather.
        return SendResult.permanent(f"not supported by the server: {exc.message}"[:300])
    return SendResult.transient(f"{type(exc).__name__}: {exc}"[:300])
