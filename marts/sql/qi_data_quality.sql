-- Work table _qi_dq: One row per completed or amended response answered at an attended session: the
-- session's clinic and month, and whether the response passed (a valid total score, not quarantined).
-- Needs _qi_responses, _qi_quarantined and the pseudonym() function. Read by marts.qi_monthly.
CREATE OR REPLACE TEMP TABLE _qi_dq AS
WITH passed_responses AS (
    SELECT DISTINCT m.source, m.response_id
    FROM staging.measure_scores m
    WHERE m.is_valid AND m.scale = 'total' AND m.status IN ('completed', 'amended')
      AND NOT EXISTS (SELECT 1 FROM _qi_quarantined q
                      WHERE q.response_id = m.response_id AND (q.source IS NULL OR q.source = m.source))
)

SELECT pseudonym('organization', s.source, s.clinic_id) AS clinic_key,
       date_trunc('month', s.session_date)::DATE AS month,
       p.response_id IS NOT NULL AS passed
FROM _qi_responses r
JOIN staging.sessions s ON s.source = r.source AND s.encounter_id = r.encounter_id
LEFT JOIN passed_responses p ON p.source = r.source AND p.response_id = r.response_id;
