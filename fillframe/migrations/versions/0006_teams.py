"""teams, users and keys: an account becomes a team with an OWNER user holding its keys

Revision ID: 0006
Revises: 0004

The `accounts` table stays (as the team) so credits, ledger rows, jobs, files and idempotency
keys keep pointing where they did: every key keeps working, every balance and ledger row is
kept. Each existing account gets one OWNER user (email `owner@<team id>.invalid` until the
operator sets a real one) who holds all of its keys and jobs.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def placeholder_email(team_id: str) -> str:
    """`.invalid` is reserved (RFC 2606): it can never be someone's real address."""
    return f"owner@{team_id}.invalid"


def upgrade() -> None:
    # Plain ADD/DROP COLUMNs throughout: with foreign keys enforced, SQLite cannot copy a table
    # that others point at (which is how batch mode changes a table).
    op.add_column("accounts", sa.Column("customer_id", sa.String(length=200), nullable=True))
    op.add_column("accounts", sa.Column("rate_limit_per_minute", sa.Integer(), nullable=True))
    op.create_index("ix_accounts_customer_id", "accounts", ["customer_id"], unique=False)
    op.create_table(
        "users",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("role", sa.String(length=8), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_users_account_id", "users", ["account_id"], unique=False)
    # References by value: SQLite can add a constraint only by copying the table.
    op.add_column("api_keys", sa.Column("user_id", sa.String(length=36), nullable=True))
    op.create_index("ix_api_keys_user_id", "api_keys", ["user_id"], unique=False)
    op.add_column("jobs", sa.Column("user_id", sa.String(length=36), nullable=True))
    op.create_index("ix_jobs_account_user_created", "jobs", ["account_id", "user_id", "created_at", "id"])
    op.create_table(
        "admin_audit",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("team_id", sa.String(length=36), nullable=True),
        sa.Column("target_id", sa.String(length=36), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_admin_audit_team_id", "admin_audit", ["team_id"], unique=False)
    _owners_for_existing_accounts()


def _owners_for_existing_accounts() -> None:
    bind = op.get_bind()
    users = sa.table(
        "users",
        sa.column("id"),
        sa.column("account_id"),
        sa.column("email"),
        sa.column("role"),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    team_ids = [row[0] for row in bind.execute(sa.text("SELECT id FROM accounts"))]
    now = datetime.now(UTC)
    if bind.dialect.name == "sqlite":
        now = now.replace(tzinfo=None)  # the app stores naive UTC in SQLite
    rows = [
        {
            "id": str(uuid.uuid4()),
            "account_id": t,
            "email": placeholder_email(t),
            "role": "OWNER",
            "created_at": now,
        }
        for t in team_ids
    ]
    if rows:
        op.bulk_insert(users, rows)
    owner = (
        "(SELECT users.id FROM users WHERE users.account_id = {table}.account_id AND users.role = 'OWNER')"
    )
    bind.execute(sa.text(f"UPDATE api_keys SET user_id = {owner.format(table='api_keys')}"))
    bind.execute(sa.text(f"UPDATE jobs SET user_id = {owner.format(table='jobs')}"))


def downgrade() -> None:
    op.drop_index("ix_admin_audit_team_id", table_name="admin_audit")
    op.drop_table("admin_audit")
    op.drop_index("ix_jobs_account_user_created", table_name="jobs")
    op.drop_column("jobs", "user_id")
    op.drop_index("ix_api_keys_user_id", table_name="api_keys")
    op.drop_column("api_keys", "user_id")
    op.drop_index("ix_users_account_id", table_name="users")
    op.drop_table("users")
    op.drop_index("ix_accounts_customer_id", table_name="accounts")
    op.drop_column("accounts", "rate_limit_per_minute")
    op.drop_column("accounts", "customer_id")
