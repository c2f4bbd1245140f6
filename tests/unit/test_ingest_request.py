"""Ingest reads headers from `IngestRequest.headers`, a plain dict; for the
lower-case names ingest asks for it must answer exactly as Starlette's `Headers` does,
duplicates and latin-1 values included."""

from __future__ import annotations

import pytest
from starlette.datastructures import Headers

from deskbell.api.incoming import IngestRequest, first_values

RAW = [
    (b"content-type", b"application/json"),
    (b"x-forwarded-for", b"10.0.0.1"),
    (b"x-forwarded-for", b"10.0.0.2"),
    (b"webhook-id", b"msg_\xe9"),  # latin-1, as Starlette decodes it
]
SCOPE = {"type": "http", "headers": RAW}


async def _receive() -> dict[str, object]:
    return {"type": "http.request", "body": b""}


@pytest.mark.parametrize("name", ["content-type", "x-forwarded-for", "webhook-id", "authorization"])
def test_answers_like_starlette_headers(name: str) -> None:
    ours, theirs = IngestRequest(SCOPE, _receive).headers, Headers(scope=SCOPE)
    assert ours.get(name) == theirs.get(name)
    assert ours.get(name, "absent") == theirs.get(name, "absent")
    assert (name in ours) == (name in theirs)
    assert set(ours) == set(theirs.keys())


def test_the_first_of_repeated_names_wins_from_any_iterable() -> None:
    assert first_values(RAW)["x-forwarded-for"] == "10.0.0.1"
    assert first_values(iter(RAW))["x-forwarded-for"] == "10.0.0.1"
    assert first_values(tuple(RAW)) == first_values(RAW)


def test_keeps_the_scope_and_receive_it_was_given() -> None:
    request = IngestRequest(SCOPE, _receive)
    assert request.scope is SCOPE
    assert request.receive is _receive
