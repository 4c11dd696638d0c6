"""jobs.notify_done: announce a job's end only when a request waits on it

Revision ID: 0004
Revises: 0003

On PostgreSQL every NOTIFY wakes every listening backend of the database, whatever its channel:
announcing each job's end woke each worker's LISTEN connection once per job. Only a submit with
`Prefer: wait` needs the announcement, and it says so on the job.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("notify_done", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("notify_done")
