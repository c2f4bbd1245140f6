"""API keys in the database: create (the plain key is returned once), find by hash, list,
revoke.

A key is `dbk_` plus 32 random bytes (256 bits) in URL-safe base64. Only its SHA-256 is stored.
A slow password hash (bcrypt, argon2) exists to make guessing *low-entropy* secrets expensive
after a database leak; nobody can enumerate 2^256 keys however fast the hash, so SHA-256 costs
no safety here and lets a request find its key with one unique-index lookup instead of a
deliberately slow computation per request. The `dbk_` prefix lets secret scanners spot a
leaked key.

Every check reads the database (no cache), so `deskbell apikey revoke` takes effect at once on
every node sharing it. `last_used_at` is written at most once a minute per key, so a busy key
does not turn every request into a write.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

import sqlalchemy as sa
import uuid_utils
from sqlalchemy.exc import IntegrityError

from deskbell.errors import InvalidState, NotFound
from deskbell.models import ApiKey, Scope
from deskbell.storage.engine import Database
from deskbell.storage.tables import api_keys

KEY_PREFIX = "dbk_"
KEY_BYTES = 32
TOUCH_EVERY = timedelta(minutes=1)
MAX_NAME = 64


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _key(row: sa.Row[tuple[object, ...]]) -> ApiKey:
    m = row._mapping
    return ApiKey(
        id=m["id"],
        name=m["name"],
        scope=Scope(m["scope"]),
        prefix=m["prefix"],
        created_at=m["created_at"],
        last_used_at=m["last_used_at"],
        revoked_at=m["revoked_at"],
    )


class KeyStore:
    """Queries of the `api_keys` table, over the same Database as the Store."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(
        self, scope: Scope, now: datetime, name: str | None = None
    ) -> tuple[ApiKey, str]:
        """A new key: (its record, the plain key). The plain key is not kept anywhere."""
        plain = generate_key()
        key_id = str(uuid_utils.uuid7())
        name = name or f"key-{key_id[-8:]}"
        if not 1 <= len(name) <= MAX_NAME:
            raise InvalidState(f"a key name has 1..{MAX_NAME} characters")
        values = {
            "id": key_id,
            "name": name,
            "scope": scope.value,
            "key_hash": hash_key(plain),
            "prefix": plain[: len(KEY_PREFIX) + 4],
            "created_at": now,
        }
        try:
            async with self.db.writer.begin() as conn:
                await conn.execute(api_keys.insert().values(**values))
        except IntegrityError as exc:
            raise InvalidState(f"a key named {name!r} exists already") from exc
        record = ApiKey(key_id, name, scope, str(values["prefix"]), now, None, None)
        return record, plain

    async def find_active(self, key: str) -> ApiKey | None:
        """The active key whose hash matches, or None. The hash is compared again in constant
        time after the index lookup, so no comparison of secret material short-circuits."""
        wanted = hash_key(key)
        async with self.db.reader.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(api_keys).where(
                        api_keys.c.key_hash == wanted, api_keys.c.revoked_at.is_(None)
                    )
                )
            ).first()
        if row is None or not hmac.compare_digest(row.key_hash, wanted):
            return None
        return _key(row)

    async def touch(self, found: ApiKey, now: datetime) -> None:
        """Record use, at most once per TOUCH_EVERY per key."""
        if found.last_used_at is not None and now - found.last_used_at < TOUCH_EVERY:
            return
        async with self.db.writer.begin() as conn:
            await conn.execute(
                api_keys.update().where(api_keys.c.id == found.id).values(last_used_at=now)
            )

    async def any_active(self) -> bool:
        async with self.db.reader.connect() as conn:
            found = await conn.execute(
                sa.select(api_keys.c.id).where(api_keys.c.revoked_at.is_(None)).limit(1)
            )
            return found.first() is not None

    async def list(self) -> list[ApiKey]:
        async with self.db.reader.connect() as conn:
            rows = await conn.execute(sa.select(api_keys).order_by(api_keys.c.created_at))
            return [_key(r) for r in rows]

    async def revoke(self, id_or_name: str, now: datetime, *, id_only: bool = False) -> ApiKey:
        """Revoke by id or name (by id alone with `id_only`, as `DELETE /v1/api-keys/{id}`
        does, so a key named like another's id cannot be hit); revoking a revoked key is a
        no-op that returns it."""
        async with self.db.writer.begin() as conn:
            match = api_keys.c.id == id_or_name
            if not id_only:
                match = sa.or_(match, api_keys.c.name == id_or_name)
            row = (await conn.execute(sa.select(api_keys).where(match))).first()
            if row is None:
                what = "id" if id_only else "id or name"
                raise NotFound(f"no API key with {what} {id_or_name!r}")
            if row.revoked_at is None:
                await conn.execute(
                    api_keys.update().where(api_keys.c.id == row.id).values(revoked_at=now)
                )
                row = (await conn.execute(sa.select(api_keys).where(api_keys.c.id == row.id))).one()
            return _key(row)
