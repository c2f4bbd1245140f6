"""Email addresses as an SMTP server can take them: ASCII where possible, UTF-8 where needed.

An address whose local part is ASCII always has an ASCII form: its domain IDNA-encoded
(`ana@exämple.com` -> `ana@xn--exmple-cua.com`, RFC 5891). That form is what we send, in the
envelope and in the headers, whether or not the server offers SMTPUTF8, so the message needs
no extension from this server or from any later hop. A non-ASCII local part (`josé@example.com`)
has no ASCII form: it travels only as UTF-8 (RFC 6531 envelope, RFC 6532 headers), which needs
a server that offers SMTPUTF8.

Parsing, normalisation (NFC, lower-case domain) and IDNA are email-validator's, the library
behind pydantic's `EmailStr`, so an address is read here exactly as ingest and config read it.
"""

from __future__ import annotations

import email.utils
from email.headerregistry import Address

from email_validator import validate_email

from deskbell.channels.kit.text import single_line
from deskbell.errors import UnsendableMessage


def wire_address(addr_spec: str, *, smtputf8: bool) -> str | None:
    """`local@domain` as it goes on the wire: the ASCII form when there is one, else the UTF-8
    form when the server offers SMTPUTF8, else None (this server cannot take it)."""
    validated = validate_email(
        addr_spec, check_deliverability=False, allow_smtputf8=True, allow_domain_literal=True
    )
    if validated.ascii_email is not None:
        return validated.ascii_email
    return validated.normalized if smtputf8 else None


def split_mailbox(value: str) -> tuple[str, str]:
    """`Name <a@b>` or `a@b` -> (display name, addr-spec); the name is made one line."""
    name, addr_spec = email.utils.parseaddr(value)
    return single_line(name), addr_spec


def envelope_address(value: str, *, smtputf8: bool) -> str:
    """A configured mailbox (sender or recipient) for MAIL FROM / RCPT TO. Raises
    UnsendableMessage, naming the address and why, when this server cannot take it."""
    _, addr_spec = split_mailbox(value)
    wire = wire_address(addr_spec, smtputf8=smtputf8)
    if wire is None:
        raise UnsendableMessage(
            f"cannot encode address {addr_spec!r}: its local part is not ASCII, which needs "
            "SMTPUTF8 (RFC 6531), and the SMTP server does not offer it"
        )
    return wire


def header_mailbox(name: str, addr_spec: str, *, smtputf8: bool) -> Address | None:
    """A mailbox for an address header (From, To, Reply-To), or None when it cannot be
    written for this server (a non-ASCII local part without SMTPUTF8)."""
    wire = wire_address(addr_spec, smtputf8=smtputf8)
    if wire is None:
        return None
    # By parts: `Address(addr_spec=...)` refuses a UTF-8 local part whatever the policy.
    username, _, domain = wire.rpartition("@")
    return Address(display_name=name, username=username, domain=domain)


def is_ascii(mailboxes: list[Address]) -> bool:
    """True when no addr-spec needs UTF-8 (display names are RFC 2047-encoded anyway)."""
    return all(mailbox.addr_spec.isascii() for mailbox in mailboxes)
