"""service_secrets: secrets the installation generates once, shared by every process

Revision ID: 0007
Revises: 0006

With a PostgreSQL `DATABASE_URL` and no `FILLFRAME_SECRET`, the link-signing secret is kept
here instead of in a file per machine, so every API process and worker signs links alike.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "service_secrets",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("service_secrets")
