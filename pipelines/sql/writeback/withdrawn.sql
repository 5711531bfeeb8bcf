-- Responses withdrawn as entered-in-error: One row per such response of a source (staging.excluded_responses);
-- an Observation written for it earlier is set entered-in-error.
SELECT e.response_id
FROM staging.excluded_responses e
WHERE e.source = $source AND e.status = 'entered-in-error'
ORDER BY e.response_id;
