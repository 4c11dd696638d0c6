"""webhook deliveries: the destination each one counts against, for a per-host cap over all processes

Revision ID: 0008
Revises: 0006

The cap of `webhook_per_host` attempts in flight to one destination was counted in each
process's memory, so N processes sharing the database could hold N times the cap against one
hanging receiver. The claim now counts the claimed rows still under their lease per destination
in the database (`fillframe.webhooks.deliver.claim`), which needs the destination (`scheme://
host:port`, parsed from the URL) as a column; `ix_webhook_in_flight` covers just the claimed
rows. Existing rows get theirs here. The column's default ('') only serves a process still on
the previous code during a rolling upgrade.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from fillframe.webhooks.deliver import destination

revision = "0008"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("destination", sa.Text(), nullable=False, server_default=""))
        batch_op.create_index(
            "ix_webhook_in_flight",
            ["destination", "next_attempt_at"],
            unique=False,
            sqlite_where=sa.text("locked_by IS NOT NULL"),
            postgresql_where=sa.text("locked_by IS NOT NULL"),
        )
    conn = op.get_bind()
    deliveries = sa.table("webhook_deliveries", sa.column("url", sa.Text), sa.column("destination", sa.Text))
    urls = conn.execute(sa.select(deliveries.c.url).distinct()).scalars().all()
    for url in urls:
        conn.execute(deliveries.update().where(deliveries.c.url == url).values(destination=destination(url)))


def downgrade() -> None:
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_in_flight")
        batch_op.drop_column("destination")
