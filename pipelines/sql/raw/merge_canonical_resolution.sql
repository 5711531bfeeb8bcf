-- Merge a landing file's canonical-resolution attempts the warehouse lacks.
INSERT INTO raw.canonical_resolution
SELECT landed.* FROM land.raw.canonical_resolution landed
WHERE NOT EXISTS (
    SELECT 1 FROM raw.canonical_resolution known
    WHERE known.source IS NOT DISTINCT FROM landed.source
      AND known.canonical IS NOT DISTINCT FROM landed.canonical
      AND known.run_id IS NOT DISTINCT FROM landed.run_id
      AND known.checked_at IS NOT DISTINCT FROM landed.checked_at
);
