"""Fair claims: the indexes the fair pick probes, and the claim function generated from it

Revision ID: 0005
Revises: 0004

The claim now picks across accounts (fewest running, then least recently served, then the
oldest runnable job: `fillframe.jobs.queue.fair_pick`). It probes `ix_jobs_fair` (status,
account_id, run_after, created_at) to skip from one account with queued jobs to the next, to
count an account's running jobs and to find its oldest runnable one; that index covers what
`ix_jobs_account_status` (account_id, status) and `ix_jobs_queue` (status, run_after,
created_at, the old claim's order) served, and they go: every index costs each update of a job
(a claim, a finish) one more entry to write. `ix_jobs_served` (account_id, started_at; started
jobs only) gives an account's latest start in one probe.

`fillframe_claim` is no longer written out by hand: it is generated from the statement SQLite
runs (`queue.claim_function_sql`), so the two cannot drift. A later change to that statement
needs a migration that runs it again; tests/jobs/test_claim_function.py fails until one does.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import sqlalchemy as sa
from alembic import op

from fillframe.jobs.queue import claim_function_sql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_jobs_fair", ["status", "account_id", "run_after", "created_at"], unique=False
        )
        batch_op.create_index(
            "ix_jobs_served",
            ["account_id", "started_at"],
            unique=False,
            sqlite_where=sa.text("started_at IS NOT NULL"),
            postgresql_where=sa.text("started_at IS NOT NULL"),
        )
        batch_op.drop_index("ix_jobs_account_status")
        batch_op.drop_index("ix_jobs_queue")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(claim_function_sql())


def _function_of_0003() -> str:
    """0003's claim function, for going back (a migration file is not an importable module)."""
    path = Path(__file__).with_name("0003_claim_function.py")
    spec = importlib.util.spec_from_file_location("fillframe_migration_0003", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.CLAIM_FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_function_of_0003())
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index("ix_jobs_queue", ["status", "run_after", "created_at"], unique=False)
        batch_op.create_index("ix_jobs_account_status", ["account_id", "status"], unique=False)
        batch_op.drop_index("ix_jobs_served")
        batch_op.drop_index("ix_jobs_fair")
