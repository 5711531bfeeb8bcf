-- Merge a landing file's pull log rows the warehouse lacks (one row per run, source, type and start).
INSERT INTO raw.fetch_log
SELECT landed.* FROM land.raw.fetch_log landed
WHERE NOT EXISTS (
    SELECT 1 FROM raw.fetch_log known
    WHERE known.run_id IS NOT DISTINCT FROM landed.run_id
      AND known.source IS NOT DISTINCT FROM landed.source
      AND known.resource_type IS NOT DISTINCT FROM landed.resource_type
      AND known.started_at IS NOT DISTINCT FROM landed.started_at
);
