-- staging.session_measures: valid, non-quarantined scores linked to the attended session they were given at.
-- A score joins its session by encounter (and the session's patient must be the response's subject).
-- When one encounter has several valid responses of one instrument (a resubmission), the newest
-- `authored` wins, all of its scales together. Work tables are temporary; counts: session_measures_counts.sql.

CREATE OR REPLACE TEMP TABLE usable_scores AS
SELECT s.source, s.response_id, s.instrument, s.scale, s.score, s.rater, s.authored_at,
       ref_id(s.patient_ref, 'Patient') AS patient_id,
       ref_id(s.encounter_ref, 'Encounter') AS encounter_id
FROM staging.measure_scores s
WHERE s.is_valid AND s.score IS NOT NULL AND s.status IN ('completed', 'amended')
  AND NOT EXISTS (
      SELECT 1 FROM quality.current_quarantine q
      WHERE q.table_name = 'staging.measure_scores' AND q.record_key = s.response_id
        AND (q.source IS NULL OR q.source = s.source));

-- usable responses that have a valid total
CREATE OR REPLACE TEMP TABLE usable_responses AS
SELECT source, response_id, any_value(instrument) AS instrument, any_value(rater) AS rater,
       any_value(authored_at) AS authored_at, any_value(patient_id) AS patient_id,
       any_value(encounter_id) AS encounter_id
FROM usable_scores
GROUP BY source, response_id
HAVING count(*) FILTER (WHERE scale = 'total') > 0;

CREATE OR REPLACE TEMP TABLE linked_responses AS
SELECT r.*, ses.episode_id, ses.session_number, ses.session_date,
       ses.patient_id AS session_patient_id,
       row_number() OVER (
           PARTITION BY r.source, r.encounter_id, r.instrument
           ORDER BY r.authored_at DESC NULLS LAST, r.response_id DESC) AS newest
FROM usable_responses r
JOIN staging.sessions ses
  ON ses.source = r.source AND ses.encounter_id = r.encounter_id
 AND (r.patient_id IS NULL OR r.patient_id = ses.patient_id);

CREATE OR REPLACE TABLE staging.session_measures AS
SELECT l.source, l.encounter_id, l.session_patient_id AS patient_id, l.episode_id, l.session_number,
       l.session_date, l.instrument, u.scale, u.score, l.rater, l.response_id, l.authored_at
FROM linked_responses l
JOIN usable_scores u ON u.source = l.source AND u.response_id = l.response_id
WHERE l.newest = 1
ORDER BY l.source, l.episode_id, l.session_number, l.instrument, u.scale;
