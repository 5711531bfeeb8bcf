-- Versions of a batch (`landing_keys`: id, version_id) already landed, as 'raw' or 'rejected'.
SELECT k.id, k.version_id, 'raw' AS known_as FROM landing_keys k
WHERE EXISTS (SELECT 1 FROM {{ table }} r
              WHERE r.source = $source AND r.id = k.id AND r.version_id = k.version_id)
UNION ALL
SELECT k.id, k.version_id, 'rejected' FROM landing_keys k
WHERE EXISTS (SELECT 1 FROM raw.rejected j
              WHERE j.source = $source AND j.id IS NOT DISTINCT FROM k.id
                AND j.version_id = k.version_id)
