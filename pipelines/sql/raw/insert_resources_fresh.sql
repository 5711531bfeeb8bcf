-- Land a validated batch (`landing_ok`) into a target that held nothing of this source and type: the only
-- possible repeats are this pull's own, which the lander already removed, so no anti-join is needed.
INSERT INTO {{ table }}
SELECT source, resource_type, id, version_id, version_from_server,
       TRY_CAST(last_updated AS TIMESTAMPTZ), content_sha256, resource::JSON,
       origin, run_id, fetched_at, deleted
FROM landing_ok batch
