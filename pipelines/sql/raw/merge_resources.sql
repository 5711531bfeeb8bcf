-- Merge a landing file's resource versions the warehouse lacks (idempotent on source, id, version_id).
INSERT INTO {{ table }}
SELECT landed.* FROM {{ landing_table }} landed
WHERE NOT EXISTS (
    SELECT 1 FROM {{ table }} known
    WHERE known.source IS NOT DISTINCT FROM landed.source
      AND known.id IS NOT DISTINCT FROM landed.id
      AND known.version_id IS NOT DISTINCT FROM landed.version_id
);
