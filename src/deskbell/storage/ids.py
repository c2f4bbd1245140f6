"""Record ids: UUIDv7 made on arrival, and the one check that a value can name a record."""

from __future__ import annotations

import uuid

import uuid_utils


def new_id() -> str:
    """UUIDv7: time-ordered, so inserts append to the index instead of scattering."""
    return str(uuid_utils.uuid7())


def parse_id(value: str) -> str | None:
    """An id as stored (lower-case, hyphenated UUID text), or None when `value` is no UUID at
    all: such a value names no record, so it never reaches the database (PostgreSQL refuses
    a NUL byte in text, and a lookup by garbage is wasted work)."""
    if len(value) > 45:  # the longest form uuid.UUID takes: urn:uuid: and 36 characters
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None
