"""Signed ingest (Standard Webhooks): `webhook-id`, `webhook-timestamp` and
`webhook-signature` checked against the raw body with a sender's `whsec_` secret.

The `standardwebhooks` library decodes the secrets and computes the signature (the part the
spec defines); this module does the rest itself because `Webhook.verify` reads the wall clock
instead of deskbell's injectable one and raises plain ValueError, binascii.Error or
UnicodeDecodeError on malformed headers or bodies, which would surface as 500s. Here every
malformed input is a 401.

What is accepted:
- a timestamp within 5 minutes of now (either way), so a captured request cannot be replayed
  later; a replay inside the window carries the same `webhook-id`, which ingest uses as the
  Idempotency-Key, so it is answered like a repeat and creates nothing;
- any `v1,<base64>` signature in the space-separated header matching any configured secret,
  so a sender may send several signatures and rotate secrets without downtime.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from standardwebhooks import Webhook

from deskbell.channels.kit.whsec import RULE, is_webhook_secret
from deskbell.errors import ConfigError, DeskbellError

TOLERANCE = timedelta(minutes=5)
MAX_ID_CHARS = 200  # leaves room for the "webhook:" prefix in a 255-char Idempotency-Key
MAX_SIGNATURE_CHARS = 4096
MAX_SIGNATURES = 16
HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
_HEADER_NAMES = frozenset(HEADERS)
_ID = re.compile(r"^[\x21-\x7e]{1,200}$")  # printable ASCII, no spaces
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")


@dataclass(frozen=True)
class Verifier:
    """One accepted secret and the source (sender) it belongs to."""

    source: str
    webhook: Webhook


@dataclass(frozen=True)
class Verified:
    source: str
    webhook_id: str


class SignatureError(DeskbellError):
    """A signed request that does not verify; `code` is the 401's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_secrets(text: str, source: str = "env") -> list[Verifier]:
    """Comma-separated `whsec_` secrets (DESKBELL_WEBHOOK_SECRETS). Errors never repeat one."""
    found = []
    for position, item in enumerate(p.strip() for p in text.split(",")):
        if not item:
            continue
        if not is_webhook_secret(item):
            raise ConfigError(f"DESKBELL_WEBHOOK_SECRETS item {position + 1}: must be {RULE}")
        found.append(Verifier(source, Webhook(item)))
    return found


def is_signed(headers: Mapping[str, str]) -> bool:
    """One set operation rather than a lookup per name: every unsigned ingest asks too.
    ASGI header names are lower case, as Starlette's `Headers.keys()` gives them."""
    return not _HEADER_NAMES.isdisjoint(headers.keys())


def verify(
    body: bytes, headers: Mapping[str, str], verifiers: Sequence[Verifier], now: datetime
) -> Verified:
    """The source whose secret signed this request, or SignatureError saying why not."""
    msg_id = headers.get("webhook-id", "")
    stamp = headers.get("webhook-timestamp", "")
    header = headers.get("webhook-signature", "")
    if not (msg_id and stamp and header):
        raise SignatureError(
            "invalid_signature", "webhook-id, webhook-timestamp and webhook-signature are required"
        )
    if not _ID.match(msg_id):
        raise SignatureError(
            "invalid_signature", f"webhook-id must be 1..{MAX_ID_CHARS} printable ASCII characters"
        )
    if not _TIMESTAMP.match(stamp):
        raise SignatureError("invalid_signature", "webhook-timestamp must be Unix seconds")
    sent_at = datetime.fromtimestamp(int(stamp), UTC)
    if abs(now - sent_at) > TOLERANCE:
        raise SignatureError(
            "stale_signature", "webhook-timestamp is more than 5 minutes from the server's time"
        )
    if not verifiers:
        raise SignatureError("invalid_signature", "no webhook secrets are configured")
    presented = _signatures(header)
    try:
        data = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SignatureError("invalid_signature", "no matching signature") from None
    for verifier in verifiers:
        expected = _decode(verifier.webhook.sign(msg_id, sent_at, data).split(",", 1)[1])
        if expected is not None and any(hmac.compare_digest(expected, s) for s in presented):
            return Verified(verifier.source, msg_id)
    raise SignatureError("invalid_signature", "no matching signature")


def _signatures(header: str) -> list[bytes]:
    """The decoded `v1` signatures; other versions and malformed entries are ignored."""
    if len(header) > MAX_SIGNATURE_CHARS:
        raise SignatureError("invalid_signature", "webhook-signature is too long")
    found = []
    for item in header.split(" ")[:MAX_SIGNATURES]:
        version, _, encoded = item.partition(",")
        if version == "v1":
            decoded = _decode(encoded)
            if decoded is not None:
                found.append(decoded)
    return found


def _decode(encoded: str) -> bytes | None:
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """A `v1,...` signature as a sender computes it (used by tests and `docs/security.md`)."""
    when = datetime.fromtimestamp(timestamp, UTC)
    return Webhook(secret).sign(msg_id, when, body.decode("utf-8"))
