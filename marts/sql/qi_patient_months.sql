-- Work table _qi_patient_months: One row per patient x month with an attended session: the clinic of the
-- month's last session, and the PDC window ending at the month's end (or the reference date), for
-- pdc.sql. Read by marts.qi_monthly.
CREATE OR REPLACE TEMP TABLE _qi_patient_months AS
WITH numbered_sessions AS (   -- each patient's sessions in order
    SELECT *, row_number() OVER (PARTITION BY source, patient_id ORDER BY session_start, encounter_id) AS seq
    FROM staging.sessions
),

patient_months AS (
    SELECT source, patient_id, date_trunc('month', session_date)::DATE AS month,
           arg_max(clinic_id, seq) AS clinic_id   -- the clinic of the month's last session
    FROM numbered_sessions
    GROUP BY ALL
)

SELECT s.source, s.patient_id, s.month,
       s.source || '|' || s.patient_id || '|' || strftime(s.month, '%Y-%m') AS period_id,
       s.clinic_id,
       least(last_day(s.month), t.as_of_date) - (t.pdc_window_days - 1) AS period_start,
       least(last_day(s.month), t.as_of_date) AS period_end
FROM patient_months s
CROSS JOIN mart_params t;
