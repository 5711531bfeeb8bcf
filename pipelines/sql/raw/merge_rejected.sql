-- Merge a landing file's rejected resources the warehouse lacks (one row per source, id, version).
INSERT INTO raw.rejected
SELECT landed.* FROM land.raw.rejected landed
WHERE NOT EXISTS (
    SELECT 1 FROM raw.rejected known
    WHERE known.source IS NOT DISTINCT FROM landed.source
      AND known.id IS NOT DISTINCT FROM landed.id
      AND known.version_id IS NOT DISTINCT FROM landed.version_id
);
