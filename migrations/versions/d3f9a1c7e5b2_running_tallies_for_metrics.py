"""running tallies of the ledger, refusals and finished jobs, kept by triggers, for /metrics

Revision ID: d3f9a1c7e5b2
Revises: b7d1e4a9c2f3
Create Date: 2026-12-02 09:40:00

Counting ten million ledger entries at every scrape costs seconds; these tables hold the same
sums, written by PostgreSQL itself as each row is inserted, so a scrape reads a few dozen rows
(docs/decisions/0012). Tallies are delta rows, never updated in place: concurrent writers take
no lock on a shared row (no waits, no deadlocks); ``compact_tallies()`` folds them together.
"""
from alembic import op
import sqlalchemy as sa


revision = "d3f9a1c7e5b2"
down_revision = "b7d1e4a9c2f3"
branch_labels = None
depends_on = None

FUNCTIONS = """
-- Upper bounds (seconds) of the job latency histogram's buckets: its one home. The API reads
-- them with SELECT job_latency_bounds() to expose every bucket, empty ones included.
CREATE FUNCTION job_latency_bounds() RETURNS double precision[] LANGUAGE sql IMMUTABLE AS $$
    SELECT '{1,2,5,10,30,60,120,300,600,1800,3600,7200,21600,86400}'::double precision[]
$$;

CREATE FUNCTION job_latency_bucket(elapsed double precision) RETURNS double precision
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(min(bound), 'Infinity'::double precision)
    FROM unnest(job_latency_bounds()) AS bound WHERE elapsed <= bound
$$;

CREATE FUNCTION ledger_entries_tally() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ledger_tallies (capability, outcome, held, decision, reason, entries, granted_ms)
    SELECT capability, outcome, held, '', '', count(*), coalesce(sum(granted_ms), 0)
    FROM added GROUP BY capability, outcome, held;
    RETURN NULL;
END $$;

CREATE FUNCTION grant_decisions_tally() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ledger_tallies (capability, outcome, held, decision, reason, entries, granted_ms)
    SELECT e.capability, e.outcome, e.held, d.decision, d.reason, count(*), coalesce(sum(e.granted_ms), 0)
    FROM added AS d JOIN ledger_entries AS e ON e.id = d.entry_id
    GROUP BY e.capability, e.outcome, e.held, d.decision, d.reason;
    RETURN NULL;
END $$;

CREATE FUNCTION ledger_rejections_tally() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rejection_tallies (reason, records) SELECT reason, count(*) FROM added GROUP BY reason;
    RETURN NULL;
END $$;

-- A job is counted once, when its finished_at is first set (or it is inserted finished: a
-- submission the broker could not take).
CREATE FUNCTION jobs_latency_tally() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    elapsed double precision;
BEGIN
    IF NEW.finished_at IS NOT NULL AND (TG_OP = 'INSERT' OR OLD.finished_at IS NULL) THEN
        elapsed := greatest(0, extract(epoch FROM NEW.finished_at - NEW.created_at));
        INSERT INTO job_latency_tallies (kind, state, le, jobs, seconds)
        VALUES (NEW.kind, NEW.state, job_latency_bucket(elapsed), 1, elapsed);
    END IF;
    RETURN NULL;
END $$;

-- Folds each table's delta rows into one row per group, atomically: a reader sees the rows
-- before or after, never both; a second compaction running at once finds the rows gone.
CREATE FUNCTION compact_tallies() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    WITH gone AS (DELETE FROM ledger_tallies RETURNING *)
    INSERT INTO ledger_tallies (capability, outcome, held, decision, reason, entries, granted_ms)
    SELECT capability, outcome, held, decision, reason, sum(entries), sum(granted_ms)
    FROM gone GROUP BY capability, outcome, held, decision, reason;
    WITH gone AS (DELETE FROM rejection_tallies RETURNING *)
    INSERT INTO rejection_tallies (reason, records)
    SELECT reason, sum(records) FROM gone GROUP BY reason;
    WITH gone AS (DELETE FROM job_latency_tallies RETURNING *)
    INSERT INTO job_latency_tallies (kind, state, le, jobs, seconds)
    SELECT kind, state, le, sum(jobs), sum(seconds) FROM gone GROUP BY kind, state, le;
END $$;
"""

# Created before the tables are filled from what exists: CREATE TRIGGER locks each table
# against writers until this migration commits, so no row is counted twice or missed.
TRIGGERS = """
CREATE TRIGGER ledger_entries_tally AFTER INSERT ON ledger_entries
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_tally();
CREATE TRIGGER grant_decisions_tally AFTER INSERT ON grant_decisions
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION grant_decisions_tally();
CREATE TRIGGER ledger_rejections_tally AFTER INSERT ON ledger_rejections
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION ledger_rejections_tally();
CREATE TRIGGER jobs_latency_tally AFTER INSERT OR UPDATE OF finished_at ON jobs
    FOR EACH ROW EXECUTE FUNCTION jobs_latency_tally();
"""

BACKFILL = """
INSERT INTO ledger_tallies (capability, outcome, held, decision, reason, entries, granted_ms)
SELECT capability, outcome, held, '', '', count(*), coalesce(sum(granted_ms), 0)
FROM ledger_entries GROUP BY capability, outcome, held;
INSERT INTO ledger_tallies (capability, outcome, held, decision, reason, entries, granted_ms)
SELECT e.capability, e.outcome, e.held, d.decision, d.reason, count(*), coalesce(sum(e.granted_ms), 0)
FROM grant_decisions AS d JOIN ledger_entries AS e ON e.id = d.entry_id
GROUP BY e.capability, e.outcome, e.held, d.decision, d.reason;
INSERT INTO rejection_tallies (reason, records) SELECT reason, count(*) FROM ledger_rejections GROUP BY reason;
INSERT INTO job_latency_tallies (kind, state, le, jobs, seconds)
SELECT kind, state, job_latency_bucket(elapsed), count(*), sum(elapsed)
FROM (SELECT kind, state, greatest(0, extract(epoch FROM finished_at - created_at)) AS elapsed
      FROM jobs WHERE finished_at IS NOT NULL) AS finished
GROUP BY kind, state, job_latency_bucket(elapsed);
"""


def upgrade():
    op.create_table(
        "ledger_tallies",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("capability", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("held", sa.Boolean(), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False, server_default=""),
        sa.Column("reason", sa.String(length=32), nullable=False, server_default=""),
        sa.Column("entries", sa.BigInteger(), nullable=False),
        sa.Column("granted_ms", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "rejection_tallies",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("records", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "job_latency_tallies",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("le", sa.Float(precision=53), nullable=False),
        sa.Column("jobs", sa.BigInteger(), nullable=False),
        sa.Column("seconds", sa.Float(precision=53), nullable=False),
    )
    # Compaction deletes nearly every row each round: vacuum them after a few thousand dead rows
    # (not a fifth of the table, the default), so a read never scans a million dead tuples.
    for table in ("ledger_tallies", "rejection_tallies", "job_latency_tallies"):
        op.execute(
            f"ALTER TABLE {table} SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000,"
            " autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 5000)"
        )
    # Results awaiting their check: few rows among millions of steps.
    op.create_index(
        "ix_job_steps_verifying", "job_steps", ["id"], postgresql_where=sa.text("state = 'verifying'")
    )
    op.execute(FUNCTIONS)
    op.execute(TRIGGERS)
    op.execute(BACKFILL)


def downgrade():
    op.execute("DROP TRIGGER jobs_latency_tally ON jobs")
    op.execute("DROP TRIGGER ledger_rejections_tally ON ledger_rejections")
    op.execute("DROP TRIGGER grant_decisions_tally ON grant_decisions")
    op.execute("DROP TRIGGER ledger_entries_tally ON ledger_entries")
    for function in (
        "compact_tallies()",
        "jobs_latency_tally()",
        "ledger_rejections_tally()",
        "grant_decisions_tally()",
        "ledger_entries_tally()",
        "job_latency_bucket(double precision)",
        "job_latency_bounds()",
    ):
        op.execute(f"DROP FUNCTION {function}")
    op.drop_index("ix_job_steps_verifying", table_name="job_steps")
    op.drop_table("job_latency_tallies")
    op.drop_table("rejection_tallies")
    op.drop_table("ledger_tallies")
