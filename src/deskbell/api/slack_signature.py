"""Slack's request signing (v0), as Slack documents it and `slack_sdk.signature` checks it.

Slack signs every request it sends to an app: `X-Slack-Signature: v0=<hex>` is HMAC-SHA256,
keyed by the app's signing secret, over `v0:{X-Slack-Request-Timestamp}:{raw body}`. The
timestamp must be within five minutes of our clock, so a captured request cannot be replayed
later; the digests are compared in constant time. This is the only authentication of
`POST /v1/slack/interactions` (there is no bearer credential).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from enum import StrEnum

TOLERANCE_SECONDS = 300
VERSION = "v0"


class Verdict(StrEnum):
    VALID = "valid"
    MISSING = "missing"  # no signature or timestamp header
    STALE = "stale"  # timestamp unreadable or more than five minutes away
    INVALID = "invalid"  # no secret produced this signature


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """`v0=<hex>` for this body at this timestamp."""
    base = f"{VERSION}:{timestamp}:".encode() + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return f"{VERSION}={digest}"


def check_headers(headers: Mapping[str, str], now: float) -> Verdict | tuple[str, str]:
    """The (timestamp, signature) pair to check, or why there is none worth checking."""
    timestamp = headers.get("x-slack-request-timestamp")
    given = headers.get("x-slack-signature")
    if not timestamp or not given:
        return Verdict.MISSING
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        return Verdict.STALE
    if abs(now - int(timestamp)) > TOLERANCE_SECONDS:
        return Verdict.STALE
    return timestamp, given


def matches(secret: str, timestamp: str, given: str, body: bytes) -> bool:
    """Constant-time: whether `secret` signed `body` at `timestamp` as `given` says."""
    expected = signature(secret, timestamp, body)
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))
