-- Work table _adherence_periods: One row per patient x adherence period holding a session or a counted
-- dispense of the patient. Periods: calendar year (the PQA measurement year, default), quarter, or
-- 'all' (the first event in the data to the reference date); a period still running ends on the
-- reference date, so days not yet lived are not "uncovered". Read by marts.adherence.
CREATE OR REPLACE TEMP TABLE _adherence_periods AS
WITH patient_events AS (   -- attended sessions and counted dispenses
    SELECT source, patient_id, session_date AS d FROM staging.sessions
    UNION ALL
    SELECT d.source, d.patient_id, d.handed_over_date
    FROM staging.dispenses d
    JOIN mart_dispense_statuses st ON st.status = d.status
    WHERE d.patient_id IS NOT NULL
),

events_to_date AS (   -- up to the reference date
    SELECT e.source, e.patient_id, e.d, t.adherence_period, t.as_of_date
    FROM patient_events e
    CROSS JOIN mart_params t
    WHERE e.d IS NOT NULL AND e.d <= t.as_of_date
),

period_starts AS (   -- the start of every period holding an event of the patient
    SELECT DISTINCT source, patient_id, adherence_period, as_of_date,
           CASE adherence_period
               WHEN 'year' THEN date_trunc('year', d)::DATE
               WHEN 'quarter' THEN date_trunc('quarter', d)::DATE
               ELSE (SELECT min(d) FROM events_to_date) END AS period_start
    FROM events_to_date
)

SELECT source, patient_id, period_start,
       least(CASE adherence_period
                 WHEN 'year' THEN (period_start + INTERVAL 1 YEAR - INTERVAL 1 DAY)::DATE
                 WHEN 'quarter' THEN (period_start + INTERVAL 3 MONTH - INTERVAL 1 DAY)::DATE
                 ELSE as_of_date END, as_of_date) AS period_end,
       adherence_period AS period_type,
       source || '|' || patient_id || '|' || strftime(period_start, '%Y-%m-%d') AS period_id
FROM period_starts;
