-- The raw schema's intake ledgers (pipelines/raw_tables.py declares each).
CREATE SCHEMA IF NOT EXISTS raw;

CREATE TABLE IF NOT EXISTS raw.rejected (
    source VARCHAR NOT NULL,
    resource_type VARCHAR,             -- NULL when the line could not be parsed at all
    id VARCHAR,
    version_id VARCHAR NOT NULL,       -- as in the resource tables; 'sha:' + text hash when unparseable
    reason VARCHAR NOT NULL,
    findings JSON,
    resource_text VARCHAR NOT NULL,    -- what was received, kept verbatim
    origin VARCHAR,
    run_id VARCHAR NOT NULL,
    rejected_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS raw.findings (
    source VARCHAR NOT NULL,
    resource_type VARCHAR NOT NULL,
    id VARCHAR,
    version_id VARCHAR NOT NULL,
    path VARCHAR NOT NULL,
    message VARCHAR NOT NULL,
    error_type VARCHAR,
    blocking BOOLEAN NOT NULL,         -- did this finding cause the rejection
    run_id VARCHAR NOT NULL,
    found_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS raw.fetch_log (
    run_id VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    resource_type VARCHAR NOT NULL,
    source_kind VARCHAR NOT NULL,
    pull_mode VARCHAR,
    since TIMESTAMPTZ,
    started_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ NOT NULL,
    fetched BIGINT NOT NULL,           -- = landed + rejected + duplicates
    landed BIGINT NOT NULL,            -- versions now in raw (new_versions + unchanged)
    new_versions BIGINT NOT NULL,
    unchanged BIGINT NOT NULL,         -- versions already in raw from an earlier run
    rejected BIGINT NOT NULL,
    duplicates BIGINT NOT NULL,        -- the same (id, version) more than once in this pull
    pages BIGINT,
    watermark_after TIMESTAMPTZ
);

CREATE TABLE IF NOT EXISTS raw.watermarks (
    source VARCHAR NOT NULL,
    resource_type VARCHAR NOT NULL,
    watermark TIMESTAMPTZ NOT NULL,
    run_id VARCHAR NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (source, resource_type)
);

CREATE TABLE IF NOT EXISTS raw.source_files (
    source VARCHAR NOT NULL,           -- folder sources: files already landed for a type, so an
    resource_type VARCHAR NOT NULL,    -- unchanged file (same size and mtime) is not read again
    path VARCHAR NOT NULL,             -- relative to the folder
    size BIGINT NOT NULL,
    mtime_ns BIGINT NOT NULL,
    run_id VARCHAR NOT NULL,
    landed_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (source, resource_type, path)
);

CREATE TABLE IF NOT EXISTS raw.bulk_jobs (
    key VARCHAR PRIMARY KEY,           -- source:ResourceType
    state JSON NOT NULL,               -- status URL and kick-off request, so a killed run resumes
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS raw.canonical_resolution (
    source VARCHAR NOT NULL,
    canonical VARCHAR NOT NULL,        -- as written in QuestionnaireResponse.questionnaire
    resolved_id VARCHAR,               -- Questionnaire id, NULL when the server has none
    status VARCHAR NOT NULL,           -- resolved | not_found | error
    detail VARCHAR,
    run_id VARCHAR NOT NULL,
    checked_at TIMESTAMPTZ NOT NULL
);

-- A patient-scoped REST pull in progress: the patients whose searches have landed, so a killed
-- pull resumes with the others. `since` is the watermark the pull started from: rows of an older
-- pull (the watermark moved since) do not count. Emptied once the pull completes.
CREATE TABLE IF NOT EXISTS raw.patient_pull_progress (
    source VARCHAR NOT NULL,
    resource_type VARCHAR NOT NULL,
    since VARCHAR NOT NULL,            -- the starting watermark as an instant, or 'full'
    patient_id VARCHAR NOT NULL,
    max_last_updated VARCHAR,          -- newest meta.lastUpdated landed for this patient (NULL: none)
    run_id VARCHAR NOT NULL,
    done_at TIMESTAMPTZ NOT NULL,
    pull_started VARCHAR,              -- the server's time (its Date header) when the pull began
    PRIMARY KEY (source, resource_type, patient_id)
);
-- Warehouses made before pull_started existed gain it (NULL there: the pull falls back).
ALTER TABLE raw.patient_pull_progress ADD COLUMN IF NOT EXISTS pull_started VARCHAR;

-- The cohort members whose whole history of a type has been pulled (a Group-level Bulk export, or a
-- patient-scoped pull whose group_id is the Group or '(Patient search)'): a member not listed here
-- joined later and gets their whole history once (a `_since` pull would bring only recent changes).
CREATE TABLE IF NOT EXISTS raw.group_members (
    source VARCHAR NOT NULL,
    resource_type VARCHAR NOT NULL,
    group_id VARCHAR NOT NULL,
    patient_id VARCHAR NOT NULL,
    run_id VARCHAR NOT NULL,           -- the run whose export first covered this member
    exported_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (source, resource_type, group_id, patient_id)
);
