-- What the server holds, as far as the pipeline knows: One row per resource type x identifier of a
-- source, its newest successful attempt in ops.writeback_log (a failed attempt changes nothing, so
-- the resource is retried next run).
SELECT resource_type, identifier, resource_id, resource_status, content_sha256, resource::VARCHAR AS resource
FROM ops.writeback_log
WHERE source = $source AND outcome <> 'failed'
QUALIFY row_number() OVER (PARTITION BY resource_type, identifier ORDER BY attempted_at DESC) = 1
ORDER BY resource_type, identifier;
