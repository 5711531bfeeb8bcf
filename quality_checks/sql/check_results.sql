-- quality.check_results: one row per check per evaluation, append-only (never updated or deleted), so
-- QI teams can trend data quality run by run.
CREATE TABLE IF NOT EXISTS quality.check_results (
    run_id VARCHAR NOT NULL,            -- Dagster run id (or a uuid for runs outside Dagster)
    checked_at TIMESTAMPTZ NOT NULL,
    suite VARCHAR NOT NULL,
    table_name VARCHAR NOT NULL,        -- schema.table the check is about
    expectation_id VARCHAR NOT NULL,    -- the check's id in its suite file
    expectation VARCHAR NOT NULL,       -- Great Expectations type(s) it ran
    severity VARCHAR NOT NULL,          -- ERROR | WARN
    success BOOLEAN,                    -- NULL when skipped (table not present)
    element_count BIGINT,
    unexpected_count BIGINT,            -- distinct offending rows
    unexpected_percent DOUBLE,
    sample_keys JSON,                   -- up to 20 record keys (resource ids only, never names)
    details JSON,                       -- per-expectation results, observed values, errors
    outcome VARCHAR NOT NULL,           -- passed | warning | contained | blocking | skipped
    quarantined BIGINT NOT NULL         -- records this evaluation put in quality.quarantine
);
