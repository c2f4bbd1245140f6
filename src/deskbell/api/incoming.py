"""What auth and body reading need of an HTTP request (`Incoming`), and ingest's own lean one.

Routes behind FastAPI pass Starlette's `Request`; ingest (api/routes/ingest.py), served
ahead of FastAPI, passes an `IngestRequest`: the scope, the receive channel and a plain dict
of headers, none of Starlette's per-request set-up. Code reached from both asks for headers
by their lower-case names, as ASGI servers send them; Starlette's `Headers` answers those too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from starlette.types import Receive, Scope


class Incoming(Protocol):
    @property
    def scope(self) -> Scope: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def receive(self) -> Receive: ...


class IngestRequest:
    """An `Incoming` for one ingest request, plus what ingest learns of it for its metrics.

    `headers` maps each lower-case name to its first value, decoded as Starlette decodes
    them (latin-1). `topic` is the payload's once parsed; `duplicate` is true when an
    idempotent repeat was answered with the stored request."""

    __slots__ = ("duplicate", "headers", "receive", "scope", "topic")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self.receive = receive
        self.headers = first_values(scope["headers"])
        self.topic: str | None = None
        self.duplicate = False


def first_values(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Reversed, so that the first of repeated names is the one the dict keeps."""
    pairs = raw if isinstance(raw, list) else list(raw)
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in reversed(pairs)}
