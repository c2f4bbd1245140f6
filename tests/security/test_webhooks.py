"""Standard Webhooks verification: good, rotated, several signatures, stale, tampered and
malformed input (every malformed header is a SignatureError, never another exception)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deskbell.api.webhooks import SignatureError, Verifier, parse_secrets, sign, verify
from deskbell.errors import ConfigError

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
OLD = "whsec_" + base64.b64encode(b"o" * 24).decode()
OTHER = "whsec_" + base64.b64encode(b"x" * 32).decode()
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TS = int(NOW.timestamp())
BODY = b'{"topic":"sales","description":"hi"}'


def headers(signature: str, ts: int = TS, msg_id: str = "msg_1") -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": signature}


def verifiers(*secrets: str) -> list[Verifier]:
    return parse_secrets(",".join(secrets))


def test_valid_signature_names_the_source() -> None:
    signed = verify(BODY, headers(sign(SECRET, "msg_1", TS, BODY)), verifiers(SECRET), NOW)
    assert (signed.source, signed.webhook_id) == ("env", "msg_1")


def test_rotation_and_several_signatures() -> None:
    # The server holds old and new secrets; the sender signs with either, or both.
    both = verifiers(OLD, SECRET)
    assert verify(BODY, headers(sign(OLD, "msg_1", TS, BODY)), both, NOW)
    several = f"v1,{'A' * 44} v2,whatever " + sign(SECRET, "msg_1", TS, BODY)
    assert verify(BODY, headers(several), verifiers(SECRET), NOW)


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("wrong secret", "invalid_signature"),
        ("tampered body", "invalid_signature"),
        ("other id", "invalid_signature"),
        ("six minutes old", "stale_signature"),
        ("six minutes ahead", "stale_signature"),
        ("missing header", "invalid_signature"),
    ],
)
def test_refusals(case: str, code: str) -> None:
    good = sign(SECRET, "msg_1", TS, BODY)
    body, hdrs = BODY, headers(good)
    if case == "wrong secret":
        hdrs = headers(sign(OTHER, "msg_1", TS, BODY))
    elif case == "tampered body":
        body = BODY.replace(b"hi", b"ho")
    elif case == "other id":
        hdrs["webhook-id"] = "msg_2"
    elif case == "six minutes old":
        old = TS - 360
        hdrs = headers(sign(SECRET, "msg_1", old, BODY), ts=old)
    elif case == "six minutes ahead":
        ahead = TS + 360
        hdrs = headers(sign(SECRET, "msg_1", ahead, BODY), ts=ahead)
    else:
        del hdrs["webhook-timestamp"]
    with pytest.raises(SignatureError) as caught:
        verify(body, hdrs, verifiers(SECRET), NOW)
    assert caught.value.code == code


def test_within_tolerance_is_accepted() -> None:
    ts = TS - 290
    assert verify(BODY, headers(sign(SECRET, "msg_1", ts, BODY), ts=ts), verifiers(SECRET), NOW)


@given(
    msg_id=st.text(max_size=300),
    stamp=st.text(max_size=30),
    signature=st.text(max_size=300),
    body=st.binary(max_size=200),
)
def test_malformed_input_is_only_ever_a_signature_error(
    msg_id: str, stamp: str, signature: str, body: bytes
) -> None:
    hdrs = {"webhook-id": msg_id, "webhook-timestamp": stamp, "webhook-signature": signature}
    with pytest.raises(SignatureError):
        verify(body, hdrs, verifiers(SECRET), NOW)


def test_bad_env_secrets_are_refused_without_echo() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_secrets(f"{SECRET},whsec_notbase64!!,")
    assert "item 2" in str(caught.value)
    assert "notbase64" not in str(caught.value)
    assert parse_secrets(" , ") == []


def test_timestamp_is_checked_against_the_given_clock() -> None:
    later = NOW + timedelta(minutes=10)
    with pytest.raises(SignatureError):
        verify(BODY, headers(sign(SECRET, "msg_1", TS, BODY)), verifiers(SECRET), later)
