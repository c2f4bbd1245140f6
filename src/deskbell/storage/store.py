"""Storage: every query deskbell makes, in small objects with one job each, sharing one
`Database`. Nothing above this package writes SQL.

- `requests` (`storage/ingest.py`): accepts new requests, grouped or with an Idempotency-Key;
- `reads` (`storage/reads.py`): requests and deliveries read back;
- `queue` (`storage/queue.py`): claim, lease renewal, give-back and replay of deliveries;
- `attempts` (`storage/attempts.py`): attempt results, a batch per transaction;
- `keys` (`storage/keys.py`): API keys;
- `handoff` (`storage/handoff.py`): claim and resolve (SPEC §9), the unclaimed count;
- `config` (`storage/config_versions.py`): the routing config's versions (SPEC §8).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from deskbell.storage.attempts import Attempts
from deskbell.storage.config_versions import ConfigVersions
from deskbell.storage.engine import Database
from deskbell.storage.handoff import Handoffs
from deskbell.storage.ingest import Ingest
from deskbell.storage.keys import KeyStore
from deskbell.storage.queue import DeliveryQueue
from deskbell.storage.reads import RequestReads


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Storage:
    db: Database
    requests: Ingest
    reads: RequestReads
    queue: DeliveryQueue
    attempts: Attempts
    keys: KeyStore
    handoff: Handoffs
    config: ConfigVersions

    @classmethod
    def open(
        cls,
        db: Database,
        now: Callable[[], datetime] = _utc_now,
        *,
        ingest_timeout: float | None = None,
    ) -> Storage:
        """All of it over `db`; `now` stamps grouped ingest batches (the clock's)."""
        return cls(
            db,
            Ingest(db, now, timeout=ingest_timeout),
            RequestReads(db),
            DeliveryQueue(db),
            Attempts(db),
            KeyStore(db),
            Handoffs(db),
            ConfigVersions(db, now),
        )

    async def aclose(self) -> None:
        """Commit the requests waiting for the group commit and stop its writer (the engines
        are the Database's, disposed by whoever made it)."""
        await self.requests.aclose()
