"""KeyStore on SQLite and PostgreSQL: only the hash is stored, revocation is seen at once by
another node (another Database on the same URL), last-used is recorded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from deskbell.errors import InvalidState, NotFound
from deskbell.models import Scope
from deskbell.storage.engine import connect
from deskbell.storage.keys import KEY_PREFIX, KeyStore, hash_key
from deskbell.storage.tables import api_keys

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def test_create_stores_only_the_hash(database_url: str) -> None:
    db = connect(database_url)
    try:
        keys = KeyStore(db)
        _record, plain = await keys.create(Scope.INGEST, NOW, name="bot")
        assert plain.startswith(KEY_PREFIX)
        assert len(plain) - len(KEY_PREFIX) >= 43  # 32 random bytes, base64
        async with db.reader.connect() as conn:
            rows = [dict(r._mapping) for r in await conn.execute(sa.select(api_keys))]
        assert len(rows) == 1
        assert rows[0]["key_hash"] == hash_key(plain)
        assert all(plain not in str(value) for value in rows[0].values())
        found = await keys.find_active(plain)
        assert found is not None
        assert (found.name, found.scope) == ("bot", Scope.INGEST)
        assert await keys.find_active(plain + "x") is None
        _, other = await keys.create(Scope.READ, NOW)
        assert other != plain
        with pytest.raises(InvalidState):
            await keys.create(Scope.READ, NOW, name="bot")
    finally:
        await db.dispose()


async def test_revoke_is_seen_by_another_node_at_once(database_url: str) -> None:
    node_a, node_b = connect(database_url), connect(database_url)
    try:
        a, b = KeyStore(node_a), KeyStore(node_b)
        record, plain = await a.create(Scope.ADMIN, NOW, name="ops")
        assert await b.find_active(plain) is not None
        assert await b.any_active()
        revoked = await a.revoke("ops", NOW + timedelta(seconds=1))
        assert revoked.revoked_at is not None
        assert await b.find_active(plain) is None
        assert not await b.any_active()
        again = await b.revoke(record.id, NOW + timedelta(seconds=5))
        assert again.revoked_at == revoked.revoked_at  # revoking twice changes nothing
        with pytest.raises(NotFound):
            await a.revoke("nobody", NOW)
    finally:
        await node_a.dispose()
        await node_b.dispose()


async def test_last_used_is_written_at_most_once_a_minute(database_url: str) -> None:
    db = connect(database_url)
    try:
        keys = KeyStore(db)
        _, plain = await keys.create(Scope.READ, NOW, name="reader")
        found = await keys.find_active(plain)
        assert found is not None
        assert found.last_used_at is None
        await keys.touch(found, NOW)
        used = await keys.find_active(plain)
        assert used is not None
        assert used.last_used_at == NOW
        await keys.touch(used, NOW + timedelta(seconds=30))
        (listed,) = await keys.list()
        assert listed.last_used_at == NOW
        await keys.touch(used, NOW + timedelta(minutes=2))
        (listed,) = await keys.list()
        assert listed.last_used_at == NOW + timedelta(minutes=2)
    finally:
        await db.dispose()


def test_admin_implies_read_and_agent_only() -> None:
    assert Scope.ADMIN.grants() == {Scope.ADMIN, Scope.READ, Scope.AGENT}
    assert Scope.AGENT.grants() == {Scope.AGENT, Scope.READ}
    assert Scope.READ.grants() == {Scope.READ}
    assert Scope.INGEST.grants() == {Scope.INGEST}
