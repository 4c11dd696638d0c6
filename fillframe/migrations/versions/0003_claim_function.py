"""PostgreSQL: the claim as one function call

Revision ID: 0003
Revises: 0002

The claim must be serialised (an advisory lock) so that an account's count of running jobs
cannot go stale between two workers; from the client that was BEGIN, the lock, the UPDATE and
COMMIT: four round trips, with the lock held across the last three. As a function it is one
round trip and the lock is held only while the server runs it. PL/pgSQL takes a new snapshot
for each statement, so the UPDATE sees every claim committed before the lock was granted.
The statement is the one `fillframe.jobs.queue` builds for SQLite, plus FOR UPDATE SKIP LOCKED.
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

CLAIM_FUNCTION = """
CREATE OR REPLACE FUNCTION fillframe_claim(
    p_worker_id text, p_now timestamptz, p_lease_expires_at timestamptz
) RETURNS SETOF jobs LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7300418);
    RETURN QUERY
    UPDATE jobs
    SET status = 'PROCESSING',
        worker_id = p_worker_id,
        lease_expires_at = p_lease_expires_at,
        attempts = jobs.attempts + 1,
        started_at = coalesce(jobs.started_at, p_now)
    WHERE jobs.status = 'QUEUED' AND jobs.id = (
        SELECT candidate.id FROM jobs AS candidate
        WHERE candidate.status = 'QUEUED'
          AND candidate.run_after <= p_now
          AND (SELECT count(*) FROM jobs AS running
               WHERE running.account_id = candidate.account_id AND running.status = 'PROCESSING')
              < (SELECT accounts.max_concurrent_jobs FROM accounts WHERE accounts.id = candidate.account_id)
        ORDER BY candidate.run_after, candidate.created_at
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    )
    RETURNING jobs.*;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(CLAIM_FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS fillframe_claim(text, timestamptz, timestamptz)")
