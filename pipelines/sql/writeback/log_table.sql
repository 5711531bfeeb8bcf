-- ops.writeback_log: One row per attempt to write a resource back to a source's FHIR server
-- (pipelines/writeback.py). The newest created/updated/unchanged row per identifier is what the
-- server holds; a failed row is retried by the next run (nothing is dropped).
CREATE SCHEMA IF NOT EXISTS ops;
CREATE TABLE IF NOT EXISTS ops.writeback_log (
    run_id VARCHAR NOT NULL,
    attempted_at TIMESTAMP WITH TIME ZONE NOT NULL,
    source VARCHAR NOT NULL,
    resource_type VARCHAR NOT NULL,
    identifier VARCHAR NOT NULL,
    outcome VARCHAR NOT NULL,          -- created | updated | unchanged | failed
    http_status INTEGER,
    resource_id VARCHAR,               -- the server's id (from the response's location)
    resource_status VARCHAR,           -- the status written (final, amended, entered-in-error, active ...)
    content_sha256 VARCHAR,            -- of the resource as written, to send nothing when it has not changed
    resource JSON,                     -- the resource as written (Flags and Tasks are re-sent from it)
    detail VARCHAR
);
