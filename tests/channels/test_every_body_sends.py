"""Property: every body ingest accepts can be built for every channel type without raising.

Issue 14 found two bodies that passed ingest and then failed every attempt (a 70-bit integer
for the webhook's JSON, a non-ASCII address for email). Bodies are generated over the whole
request schema (astral and control characters, very long words, extreme numbers, non-ASCII
addresses), kept when the real ingest validator accepts their JSON, and put through each
channel's build step: what happens before any I/O (render, escape, serialise, encode). That
step failing would make the delivery dead (see `channels.base.building`), so here it must not
fail at all. Each type's own test file holds its step (`build_check`). Deterministic
(derandomized, no example database) and quick (200 examples).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from deskbell.channels import builtin_modules
from deskbell.channels.base import Message
from deskbell.models import IJSON_MAX_INT, MAX_METADATA_KEYS, AssistanceRequestIn

VALIDATOR = AssistanceRequestIn.__pydantic_validator__
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

# Every code point but surrogates (Python strings from JSON cannot hold lone ones: ingest
# refuses them, see tests/unit/test_unsendable.py): controls, format characters, astral.
CHARS = st.characters(exclude_categories=["Cs"])
TEXT = st.text(CHARS, max_size=80)
# A word of up to 4000 characters with no space to break it at.
LONG_WORD = st.builds(lambda char, n: char * n, CHARS, st.integers(1, 4000))
HOSTILE = st.sampled_from(
    ["<!channel>", "@here", "@everyone", "<@U123>", "&amp;", "*bold*", "`x`", "\r\nBcc: x@y",
     "\x00", "\u202e", "\u2028", "=?utf-8?q?x?=", "{{ 7*7 }}", "<script>", "\U0001f600", "\\n"]
)  # fmt: skip
STRINGS = st.one_of(TEXT, LONG_WORD, HOSTILE, st.lists(st.one_of(TEXT, HOSTILE)).map("".join))

INTEGERS = st.one_of(
    st.integers(-IJSON_MAX_INT, IJSON_MAX_INT),
    st.sampled_from([0, -1, IJSON_MAX_INT, -IJSON_MAX_INT, IJSON_MAX_INT + 1, 2**63, 2**64, 2**70]),
)
FLOATS = st.one_of(
    st.floats(),  # NaN and infinities included: ingest refuses them
    st.sampled_from([-0.0, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 1e21]),
)
# Metadata: strings up to their 1024 limit; keys up to 64. A few values ingest refuses (past
# I-JSON, NaN) keep the boundary in play without filtering away most 50-key bodies.
VALUE_STRINGS = st.one_of(
    TEXT, HOSTILE, st.builds(lambda char, n: char * n, CHARS, st.integers(1, 1024))
)
VALUES = st.one_of(VALUE_STRINGS, INTEGERS, FLOATS, st.booleans())
KEYS = st.one_of(st.text(CHARS, min_size=1, max_size=64), HOSTILE)
METADATA = st.one_of(
    st.dictionaries(KEYS, VALUES, max_size=6),
    st.dictionaries(KEYS, st.one_of(VALUE_STRINGS, st.booleans()), min_size=50, max_size=50),
)

LOCAL = st.one_of(
    st.sampled_from(["ana", "josé", "用户", "o'neil+tag", "a.b", "ñ"]),
    st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=20),
)
DOMAIN = st.sampled_from(
    ["example.com", "exämple.com", "例子.广告", "xn--exmple-cua.com", "sub.example.co.uk", "ü.de"]
)
EMAILS = st.one_of(st.emails(), st.builds(lambda lp, d: f"{lp}@{d}", LOCAL, DOMAIN))
URLS = st.one_of(
    st.sampled_from(["https://chat.example.com/c/1", 'http://exämple.com/ü?q=<x>&y="z"']),
    st.builds(lambda path: "https://chat.example.com/" + quote(path), st.text(CHARS)),
    st.builds(lambda n: "https://chat.example.com/" + "x" * n, st.integers(1, 2020)),
)
LANGUAGES = st.one_of(st.from_regex(r"\A[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}\Z"), TEXT)

CUSTOMER = st.fixed_dictionaries(
    {},
    optional={"id": STRINGS, "name": STRINGS, "email": EMAILS, "phone": STRINGS},
)
BODIES = st.fixed_dictionaries(
    {
        "topic": st.one_of(st.from_regex(r"\A[a-z0-9_.-]{1,64}\Z"), st.just(" Sales ")),
        "description": st.one_of(
            STRINGS.filter(str.strip), st.text(CHARS, min_size=3990, max_size=4000)
        ),
    },
    optional={
        "customer": CUSTOMER,
        "conversation_url": URLS,
        "language": LANGUAGES,
        "metadata": METADATA,
    },
)


def accepted(body: dict[str, Any]) -> AssistanceRequestIn | None:
    """What ingest makes of `body` sent as JSON (Python's writer, as many bots use), or None
    when ingest refuses it."""
    raw = json.dumps(body).encode()
    try:
        return VALIDATOR.validate_json(raw)  # type: ignore[no-any-return]  # pydantic-core
    except ValueError:  # pydantic's ValidationError
        return None


def build_checks() -> dict[str, Callable[[Message], None]]:
    """Each built-in type's build step, from its own test file's `build_check(message)`."""
    checks = {}
    for name in builtin_modules():
        module = importlib.import_module(f"tests.channels.test_{name}")
        check = getattr(module, "build_check", None)
        assert check is not None, f"tests/channels/test_{name}.py has no build_check()"
        checks[name] = check
    return checks


BUILDERS = build_checks()


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(body=BODIES)
def test_every_accepted_body_builds_for_every_channel_type(body: dict[str, Any]) -> None:
    request = accepted(body)
    assume(request is not None)
    assert request is not None
    message = Message("dlv-1", "req-1", "some-channel", request, NOW, attempt=1)
    for build in BUILDERS.values():
        build(message)


def test_the_generator_reaches_the_hard_cases() -> None:
    """The bodies above are worth little if ingest refused all the interesting ones."""
    hard = {
        "topic": "sales",
        "description": "\U0001f600\x00\u202e" + "x" * 3990,
        "customer": {"name": "\r\nBcc: x@y", "email": "josé@exämple.com"},
        "metadata": {"big": IJSON_MAX_INT, "tiny": 5e-324, "max": 1.7976931348623157e308},
    }
    request = accepted(hard)
    assert request is not None
    assert len(request.metadata) <= MAX_METADATA_KEYS
    message = Message("dlv-1", "req-1", "hard", request, NOW)
    for build in BUILDERS.values():
        build(message)
