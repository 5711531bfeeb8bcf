-- Land a validated batch (`landing_ok`). Idempotent: a version (source, id, version_id) already present is
-- never inserted again, so re-running the same pull changes nothing.
INSERT INTO {{ table }}
SELECT source, resource_type, id, version_id, version_from_server,
       TRY_CAST(last_updated AS TIMESTAMPTZ), content_sha256, resource::JSON,
       origin, run_id, fetched_at, deleted
FROM landing_ok batch
WHERE NOT EXISTS (SELECT 1 FROM {{ table }} known
                  WHERE known.source = batch.source AND known.id = batch.id
                    AND known.version_id = batch.version_id)
