"""list indexes: the filtered request list reads an index in id order and stops at the page

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 20:00:00.000000

`GET /v1/assistance-requests?status=...` scanned `requests` newest first and probed the
deliveries of each row, so a status few requests have (or none: `in_flight` with no worker
running) read the whole table; `?topic=...` found the topic's rows by `ix_requests_topic` and
sorted all of them by id. With (status, request_id) and (topic, id) both read the page
directly. (topic, id) serves every query (topic) did, so it replaces it.

Building them locks writes to the table for the build: about 10 s for a million rows.
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_deliveries_status_request_id", "deliveries", ["status", "request_id"])
    op.create_index("ix_requests_topic_id", "requests", ["topic", "id"])
    op.drop_index("ix_requests_topic", table_name="requests")


def downgrade() -> None:
    op.create_index("ix_requests_topic", "requests", ["topic"])
    op.drop_index("ix_requests_topic_id", table_name="requests")
    op.drop_index("ix_deliveries_status_request_id", table_name="deliveries")
