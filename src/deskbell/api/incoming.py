"""What ingest reads of an HTTP request, whichever path serves it.

The documented FastAPI route passes Starlette's `Request`; the lean path (api/fast_ingest.py)
passes its `IngestRequest`, which is three attributes instead of Starlette's chain of
initialisers and case-insensitive header lookups (together 2 us of an ingest request). Code
reached from both asks for headers by their lower-case names, as ASGI servers send them:
Starlette's `Headers` answers those too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from starlette.types import Receive, Scope


class Incoming(Protocol):
    @property
    def scope(self) -> Scope: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def receive(self) -> Receive: ...
