"""Shared text helpers: header safety, truncation, field order, template escaping."""

from __future__ import annotations

import pytest

from deskbell.channels.kit.text import ELLIPSIS, details, redact, single_line, truncate
from tests.fakes import make_message


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a\r\nBcc: x@example.com", "a Bcc: x@example.com"),
        ("a\nb\rc", "a b c"),
        ("nul\x00here", "nul here"),
        ("tab\tand\x0bvt", "tab and vt"),
        ("line\u2028sep\u2029para", "line sep para"),
        ("bidi\u202eevil", "bidi evil"),
        ("  padded   out  ", "padded out"),
        ("Ana Pérez ☕", "Ana Pérez ☕"),
    ],
)
def test_single_line(raw: str, expected: str) -> None:
    assert single_line(raw) == expected


def test_single_line_with_limit() -> None:
    assert single_line("abc\r\ndef ghi", 6) == "abc d" + ELLIPSIS


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("short", 10, "short"),
        ("exactly10!", 10, "exactly10!"),
        ("0123456789ab", 5, "0123" + ELLIPSIS),
        ("x", 0, ""),
    ],
)
def test_truncate(text: str, limit: int, expected: str) -> None:
    assert truncate(text, limit) == expected


def test_details_order_and_absent_fields() -> None:
    request = make_message(
        {
            "topic": "sales",
            "description": "Hi",
            "customer": {"id": "c-1", "email": "ana@example.com", "name": "Ana"},
            "language": "en-GB",
        }
    ).request
    assert [(d.label, d.value) for d in details(request)] == [
        ("Customer", "Ana"),
        ("Email", "ana@example.com"),
        ("Customer id", "c-1"),
        ("Language", "en-GB"),
    ]


def test_redact() -> None:
    assert redact("failed for https://hooks/x/secret", "https://hooks/x/secret") == (
        "failed for <redacted>"
    )
    assert redact(None, "secret") is None


TOKEN = "b7Qx2kP9zL0aVw3mR5tY8uN1"


@pytest.mark.parametrize(
    ("error", "secret"),
    [
        (
            f"Cannot POST /services/T000/B000/{TOKEN}",
            f"https://hooks.example/services/T000/B000/{TOKEN}",
        ),
        (f"HTTP 404: no hook {TOKEN}", f"https://crm.example/hooks/{TOKEN}"),
        (f"HTTP 400: bad key=%2F{TOKEN}", f"https://crm.example/in?key=/{TOKEN}"),
        (f"HTTP 403: unknown token {TOKEN}", f"https://crm.example/in?token={TOKEN}&v=1"),
        (f"login failed for pw {TOKEN}", f"smtp://user:{TOKEN}@mail.example:587"),
    ],
)
def test_redact_hides_the_parts_of_a_secret_url_a_peer_echoes(error: str, secret: str) -> None:
    shown = redact(error, secret)
    assert shown is not None
    assert TOKEN not in shown
    assert "<redacted>" in shown


def test_redact_leaves_short_path_words_alone() -> None:
    # "services" and "T000" are not secrets by themselves; the error stays readable.
    assert redact("HTTP 500 from services", f"https://h.example/services/T000/{TOKEN}") == (
        "HTTP 500 from services"
    )
