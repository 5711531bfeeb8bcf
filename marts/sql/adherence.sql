-- marts.adherence: One row per patient x adherence period (PQA measurement year by default): PDC and
-- adherent flag, MARS and DAI-10 first/last/mean, attendance, patient- and clinician-rated alliance side
-- by side. Needs the work tables _adherence_periods and _adherence_pdc (pdc.sql over those periods),
-- the temp tables mart_params and mart_appointment_statuses, and the pseudonym() function.
CREATE OR REPLACE TABLE marts.adherence AS
WITH period_sessions AS (   -- attended sessions, episodes and the latest therapist and clinic
    SELECT p.period_id, count(*) AS sessions_attended, count(DISTINCT s.episode_id) AS episodes,
           arg_max(s.practitioner_id, (s.session_start, s.encounter_id)) AS practitioner_id,
           arg_max(s.clinic_id, (s.session_start, s.encounter_id)) AS clinic_id
    FROM _adherence_periods p
    JOIN staging.sessions s ON s.source = p.source AND s.patient_id = p.patient_id
                           AND s.session_date BETWEEN p.period_start AND p.period_end
    GROUP BY p.period_id
),

session_scores AS (   -- one row per measured session: patient and clinician WAI, MARS, DAI-10
    SELECT source, encounter_id, any_value(patient_id) AS patient_id, any_value(session_date) AS session_date,
           any_value(session_number) AS session_number, any_value(episode_id) AS episode_id,
           max(score) FILTER (WHERE instrument = 'wai_sr' AND rater = 'patient' AND scale = 'mean') AS wai_p,
           max(score) FILTER (WHERE instrument = 'wai_therapist' AND rater = 'clinician' AND scale = 'mean')
               AS wai_c,
           max(score) FILTER (WHERE instrument = 'mars' AND scale = 'total') AS mars,
           max(score) FILTER (WHERE instrument = 'dai10' AND scale = 'total') AS dai10
    FROM staging.session_measures
    GROUP BY source, encounter_id
),

period_measures AS (   -- first, last and mean MARS and DAI-10; alliance by rater
    SELECT p.period_id,
           arg_min(m.mars, (m.session_date, m.session_number)) FILTER (WHERE m.mars IS NOT NULL)
               AS mars_first,
           arg_max(m.mars, (m.session_date, m.session_number)) FILTER (WHERE m.mars IS NOT NULL)
               AS mars_last,
           avg(m.mars) AS mars_mean, count(m.mars) AS mars_n,
           arg_min(m.dai10, (m.session_date, m.session_number)) FILTER (WHERE m.dai10 IS NOT NULL)
               AS dai10_first,
           arg_max(m.dai10, (m.session_date, m.session_number)) FILTER (WHERE m.dai10 IS NOT NULL)
               AS dai10_last,
           avg(m.dai10) AS dai10_mean, count(m.dai10) AS dai10_n,
           avg(m.wai_p) AS mean_alliance_patient, count(m.wai_p) AS alliance_sessions_patient,
           avg(m.wai_c) AS mean_alliance_clinician, count(m.wai_c) AS alliance_sessions_clinician,
           avg(m.wai_p - m.wai_c) AS mean_rater_discrepancy,
           avg(m.wai_p) FILTER (WHERE m.session_number <= t.early_sessions) AS early_alliance_patient,
           avg(m.wai_c) FILTER (WHERE m.session_number <= t.early_sessions) AS early_alliance_clinician
    FROM _adherence_periods p
    CROSS JOIN mart_params t
    JOIN session_scores m ON m.source = p.source AND m.patient_id = p.patient_id
                          AND m.session_date BETWEEN p.period_start AND p.period_end
    GROUP BY p.period_id
),

period_appointments AS (
    SELECT p.period_id, count(*) AS appointments_booked,
           count(*) FILTER (WHERE k.kind = 'attended') AS appointments_attended
    FROM _adherence_periods p
    JOIN staging.appointments a ON a.source = p.source AND a.patient_id = p.patient_id
                               AND a.start_date BETWEEN p.period_start AND p.period_end
    JOIN mart_appointment_statuses k ON k.status = a.status
    GROUP BY p.period_id
)

SELECT
    pseudonym('patient', p.source, p.patient_id) AS patient_key,
    p.period_type, p.period_start, p.period_end,
    pseudonym('practitioner', p.source, ses.practitioner_id) AS therapist_key,
    pseudonym('organization', p.source, ses.clinic_id) AS clinic_key,
    coalesce(ses.episodes, 0)::INTEGER AS episodes,
    coalesce(pdc.fills, 0)::INTEGER AS fills_in_period,
    coalesce(pdc.fill_dates, 0)::INTEGER AS fill_dates_in_period,
    coalesce(pdc.drugs, 0)::INTEGER AS drugs_in_period,
    coalesce(pdc.same_drug_or_class_fill_dates, 0)::INTEGER AS same_drug_or_class_fill_dates,
    coalesce(pdc.unmapped_fills, 0)::INTEGER AS unmapped_fills_in_period,
    coalesce(pdc.unmapped_codes, 0)::INTEGER AS unmapped_codes_in_period,
    coalesce(pdc.fills, 0) > 0 AS on_medication,
    pdc.index_date AS pdc_index_date,
    pdc.index_too_late AS pdc_index_too_late,
    pdc.days_in_period AS pdc_days_in_period,
    pdc.days_covered AS pdc_days_covered,
    pdc.pdc,
    pdc.adherent AS pdc_adherent,
    m.mars_first, m.mars_last,
    CASE WHEN m.mars_n >= 2 THEN m.mars_last - m.mars_first END AS mars_change,
    m.mars_mean, coalesce(m.mars_n, 0)::INTEGER AS mars_n,
    m.dai10_first, m.dai10_last,
    CASE WHEN m.dai10_n >= 2 THEN m.dai10_last - m.dai10_first END AS dai10_change,
    m.dai10_mean, coalesce(m.dai10_n, 0)::INTEGER AS dai10_n,
    m.dai10_last > t.dai10_positive_above AS dai10_positive_last,
    coalesce(ses.sessions_attended, 0)::INTEGER AS sessions_attended,
    coalesce(a.appointments_booked, 0)::INTEGER AS appointments_booked,
    coalesce(a.appointments_attended, 0)::INTEGER AS appointments_attended,
    CASE WHEN a.appointments_booked > 0 THEN a.appointments_attended / a.appointments_booked END
        AS attendance_rate,
    m.mean_alliance_patient, coalesce(m.alliance_sessions_patient, 0)::INTEGER AS alliance_sessions_patient,
    m.mean_alliance_clinician,
    coalesce(m.alliance_sessions_clinician, 0)::INTEGER AS alliance_sessions_clinician,
    m.mean_rater_discrepancy,
    m.early_alliance_patient, m.early_alliance_clinician,
    t.pdc_threshold, t.pdc_min_fills, t.pdc_index_min_days::INTEGER AS pdc_index_min_days,
    t.dai10_positive_above, t.early_sessions
FROM _adherence_periods p
CROSS JOIN mart_params t
LEFT JOIN _adherence_pdc pdc ON pdc.period_id = p.period_id
LEFT JOIN period_sessions ses ON ses.period_id = p.period_id
LEFT JOIN period_measures m ON m.period_id = p.period_id
LEFT JOIN period_appointments a ON a.period_id = p.period_id
ORDER BY patient_key, p.period_start;
