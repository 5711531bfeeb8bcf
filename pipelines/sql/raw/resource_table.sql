-- One raw resource table (`{{ table }}` is a declared raw.<type> name, pipelines/raw_tables.py):
-- one row per resource version as received.
CREATE TABLE IF NOT EXISTS {{ table }} (
    source VARCHAR NOT NULL,            -- configured source name (site / EHR)
    resource_type VARCHAR NOT NULL,
    id VARCHAR NOT NULL,                -- FHIR logical id
    version_id VARCHAR NOT NULL,        -- meta.versionId, or 'sha:' + content hash when the server sends none
    version_from_server BOOLEAN NOT NULL,
    last_updated TIMESTAMPTZ,           -- meta.lastUpdated as sent
    content_sha256 VARCHAR NOT NULL,    -- hash of the resource without meta
    resource JSON NOT NULL,             -- the resource exactly as received
    origin VARCHAR,                     -- page URL, bulk file or folder file:line it came from
    run_id VARCHAR NOT NULL,            -- Dagster run that first landed this version
    fetched_at TIMESTAMPTZ NOT NULL,
    deleted BOOLEAN DEFAULT false       -- a tombstone: the server reported the resource deleted
);

-- Warehouses and landing files created before tombstones existed get the column (at the end, so the
-- landing merge's `SELECT l.*` lines up whatever age each file is).
ALTER TABLE {{ table }} ADD COLUMN IF NOT EXISTS deleted BOOLEAN DEFAULT false;
