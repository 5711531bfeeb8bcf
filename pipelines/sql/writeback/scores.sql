-- Score Observations to write back: One row per scored, valid response total of a source
-- (staging.measure_scores, completed or amended), with the FHIR references it was authored with.
SELECT s.response_id, s.status, s.instrument, s.score, s.authored_at, s.patient_ref, s.encounter_ref
FROM staging.measure_scores s
WHERE s.source = $source AND s.scale = 'total' AND s.is_valid AND s.score IS NOT NULL
  AND s.status IN ('completed', 'amended') AND s.patient_ref IS NOT NULL
ORDER BY s.response_id, s.instrument;
