-- Append the attempts of one Bundle to ops.writeback_log: `rows` is a registered relation of them
-- (values travel as data, never as SQL text).
INSERT INTO ops.writeback_log
SELECT run_id, now(), source, resource_type, identifier, outcome, http_status::INTEGER, resource_id,
       resource_status, content_sha256, resource::JSON, detail
FROM {{ rows }};
