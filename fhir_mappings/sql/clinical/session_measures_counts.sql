-- What session_measures.sql linked, left unlinked, superseded and left out for quarantine (its temp tables).
WITH quarantined AS (
    SELECT count(DISTINCT (s.source, s.response_id)) AS responses
    FROM staging.measure_scores s
    JOIN quality.current_quarantine q
      ON q.table_name = 'staging.measure_scores' AND q.record_key = s.response_id
     AND (q.source IS NULL OR q.source = s.source)
    WHERE s.is_valid
)
SELECT (SELECT count(*) FROM staging.session_measures) AS session_rows,
       (SELECT count(*) FROM linked_responses WHERE newest = 1) AS responses_linked,
       (SELECT count(*) FROM usable_responses) - (SELECT count(*) FROM linked_responses) AS responses_unlinked,
       (SELECT count(*) FROM linked_responses WHERE newest > 1) AS responses_superseded,
       (SELECT responses FROM quarantined) AS responses_quarantined
