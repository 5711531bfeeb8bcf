-- The prospective adherence behind marts.alliance_associations: One row per treatment episode with its
-- early alliance by rater (sessions 1..early_sessions), its therapist, and the adherence in the window
-- after it (_prospective_windows): PDC by the PQA method over the window (_prospective_pdc, computed by
-- marts/sql/pdc.sql: fills in the window, index date at least pdc_index_min_days before its end) and the
-- mean MARS and DAI-10 totals of the patient's sessions in the window. Windows that have not started by
-- the reference date are left out.
WITH window_measures AS (   -- MARS and DAI-10 totals at the patient's sessions inside the window
    SELECT w.period_id,
           avg(m.score) FILTER (WHERE m.instrument = 'mars') AS mars_mean,
           avg(m.score) FILTER (WHERE m.instrument = 'dai10') AS dai10_mean
    FROM _prospective_windows w
    JOIN staging.session_measures m
      ON m.source = w.source AND m.patient_id = w.patient_id
     AND m.session_date BETWEEN w.period_start AND w.period_end
    WHERE m.instrument IN ('mars', 'dai10') AND m.scale = 'total' AND m.rater = 'patient'
    GROUP BY w.period_id
)

SELECT w.period_id AS episode_key, w.therapist_key, w.early_alliance_patient, w.early_alliance_clinician,
       pdc.pdc, wm.mars_mean, wm.dai10_mean
FROM _prospective_windows w
LEFT JOIN _prospective_pdc pdc ON pdc.period_id = w.period_id
LEFT JOIN window_measures wm ON wm.period_id = w.period_id
WHERE w.period_start <= w.period_end
ORDER BY w.period_id;
