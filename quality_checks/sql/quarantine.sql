-- quality.quarantine: one row per offending record of a failed row-level ERROR check, append-only.
-- A record leaves the *current* quarantine (quality.current_quarantine) only when a newer run of the
-- same check no longer flags it; its rows here stay.
CREATE TABLE IF NOT EXISTS quality.quarantine (
    run_id VARCHAR NOT NULL,
    quarantined_at TIMESTAMPTZ NOT NULL,
    table_name VARCHAR NOT NULL,
    expectation_id VARCHAR NOT NULL,
    severity VARCHAR NOT NULL,
    source VARCHAR,                     -- FHIR source name when the record has one
    record_key VARCHAR NOT NULL,        -- e.g. the response_id for staging.measure_scores
    reason VARCHAR NOT NULL,
    record JSON NOT NULL                -- the offending row as checked
);
