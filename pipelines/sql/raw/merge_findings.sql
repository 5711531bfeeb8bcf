-- Merge a landing file's validation findings the warehouse lacks (one row per version, path and message).
INSERT INTO raw.findings
SELECT landed.* FROM land.raw.findings landed
WHERE NOT EXISTS (
    SELECT 1 FROM raw.findings known
    WHERE known.source IS NOT DISTINCT FROM landed.source
      AND known.id IS NOT DISTINCT FROM landed.id
      AND known.version_id IS NOT DISTINCT FROM landed.version_id
      AND known.path IS NOT DISTINCT FROM landed.path
      AND known.message IS NOT DISTINCT FROM landed.message
);
