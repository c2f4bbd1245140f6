"""replay budget and write heartbeat: a replayed delivery's fresh budget; a row /readyz writes

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 10:00:00.000000

`deliveries.replayed_at` and `deliveries.replay_base` (the attempts spent before the last
replay): the retry policy counts attempts and age from the replay (`storage/queue.py`). Both
are NULL until a delivery is replayed; nullable without a default, so adding them rewrites
nothing on either engine.

`heartbeat`: one row that `/readyz` updates and commits (`storage/health.py`), so readiness
turns red when writes fail (a held write lock, a full disk) and not only when reads do.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from deskbell.storage.tables import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("replayed_at", UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("replay_base", sa.Integer(), nullable=True))
    heartbeat = op.create_table(
        "heartbeat",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("beat_at", UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_heartbeat")),
    )
    op.bulk_insert(heartbeat, [{"id": 1, "beat_at": None}])


def downgrade() -> None:
    op.drop_table("heartbeat")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("replay_base")
        batch.drop_column("replayed_at")
