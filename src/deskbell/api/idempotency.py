"""Idempotency-Key semantics: a key belongs to its caller, and "the same body" is the same JSON.

Two bots may well both send `conv-123`; with one global key space the second got 409, or the
first bot's request back. So the key stored is a SHA-256 of the caller and the key together
(`scoped_key`): 64 hex characters, which fit the existing `requests.idempotency_key` column
(255) whatever the key's length, so no migration, and the unique index still makes the claim
atomic. The caller is the API key (its name), the webhook source (every secret of one source
is one sender, so rotating secrets keeps its keys) or, with auth off, "anonymous" (one owner,
whatever the client address).

The body is compared as parsed JSON, serialised with sorted keys (`body_digest`): the same
object with its keys in another order or other whitespace is the same request. The standard
library parses it, not orjson: orjson reads an integer beyond 64 bits as a float, so two
different large numbers would compare equal. Only keyed requests pay for it.

Keys stored before this scheme were the raw keys: they no longer match anything, so a retry
with such a key (within its 24 h) is taken as a new request.
"""

from __future__ import annotations

import hashlib
import json

from deskbell.api.auth import Principal


def scoped_key(principal: Principal, key: str) -> str:
    """What is stored for `key` sent by `principal`: equal only for the same caller and key."""
    owner = "anonymous" if principal.kind == "anonymous" else principal.bucket
    return hashlib.sha256(f"{owner}\n{key}".encode()).hexdigest()


def body_digest(body: bytes) -> str:
    """SHA-256 of the body as canonical JSON (sorted keys, no whitespace); the raw bytes if
    the body does not parse (it was validated before, so that is not expected)."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return hashlib.sha256(body).hexdigest()
    canonical = json.dumps(parsed, sort_keys=True, separators=(",", ":"))  # ASCII (\\u escapes)
    return hashlib.sha256(canonical.encode()).hexdigest()
