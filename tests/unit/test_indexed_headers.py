"""The lean ingest path reads headers through `IndexedHeaders`; it must answer exactly as
Starlette's `Headers` does, duplicates and letter case included."""

from __future__ import annotations

import pytest
from starlette.datastructures import Headers

from deskbell.api.fast_ingest import IndexedHeaders

RAW = [
    (b"content-type", b"application/json"),
    (b"x-forwarded-for", b"10.0.0.1"),
    (b"x-forwarded-for", b"10.0.0.2"),
    (b"webhook-id", b"msg_\xe9"),  # latin-1, as Starlette decodes it
]
SCOPE = {"type": "http", "headers": RAW}


@pytest.mark.parametrize(
    "name", ["content-type", "Content-Type", "X-Forwarded-For", "webhook-id", "authorization"]
)
def test_answers_like_starlette_headers(name: str) -> None:
    ours, theirs = IndexedHeaders(SCOPE), Headers(scope=SCOPE)
    assert ours.get(name) == theirs.get(name)
    assert ours.get(name, "absent") == theirs.get(name, "absent")
    assert (name in ours) == (name in theirs)
    if name in theirs:
        assert ours[name] == theirs[name]
    else:
        with pytest.raises(KeyError):
            ours[name]
    assert ours.getlist(name) == theirs.getlist(name)


def test_first_value_wins_and_non_strings_are_absent() -> None:
    headers = IndexedHeaders(SCOPE)
    assert headers["x-forwarded-for"] == "10.0.0.1"
    assert b"content-type" not in headers
