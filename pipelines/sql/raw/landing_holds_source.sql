-- Does the landing target already hold anything of this source and type (a resource or a rejection)?
-- When not, landing skips the per-batch look-ups of known versions (a fresh target has none).
SELECT EXISTS (SELECT 1 FROM {{ table }} WHERE source = $source)
    OR EXISTS (SELECT 1 FROM raw.rejected
               WHERE source = $source AND (resource_type = $resource_type OR resource_type IS NULL))
