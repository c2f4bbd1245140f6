"""config versions: the routing config stored, numbered and activated in the database

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 03:30:00.000000

SPEC §8: `PUT /v1/config` stores the next version and activates it; every node polls (or on
PostgreSQL also LISTENs for) the active number and switches. A new table: nothing rewritten.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from deskbell.storage.tables import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "config_versions",
        sa.Column("number", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("author", sa.String(128), nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("number", name=op.f("pk_config_versions")),
    )
    op.create_index("ix_config_versions_active", "config_versions", ["active"])


def downgrade() -> None:
    op.drop_index("ix_config_versions_active", table_name="config_versions")
    op.drop_table("config_versions")
