"""Medication adherence: PDC by the PQA method, and `marts.adherence` (one row per patient x period).

PDC (proportion of days covered, Pharmacy Quality Alliance): over a measurement period, fills
(MedicationDispense with a counted status, `whenHandedOver` date in the period, `daysSupply` > 0)
need at least `pdc_min_fills` distinct fill dates; the index date is the first fill in the period;
the denominator is the days from the index date to the period end (inclusive). A fill of a drug
that is still covered by an earlier fill of the same drug starts the day after that supply ends
(shifted forward); a day counts once however many drugs cover it; days after the period end do not
count. Adherent when PDC >= `pdc_threshold`.

The shift is set-based: for fills k of one drug in date order with supplies s and S_k the supply of
the fills before k, the adjusted start is `S_k + max_{j<=k}(day_j - S_j)` (a running maximum).
"""

from __future__ import annotations

import duckdb


def pdc_sql(periods: str) -> str:
    """PDC per period. `periods` names a relation with (source, patient_id, period_id, period_start,
    period_end) (the project's own temp tables, never data). Output: one row per period with fills,
    distinct fill dates and drugs, index date, days in period, days covered, pdc and adherent."""
    return f"""
    WITH per AS (SELECT * FROM {periods} WHERE period_start <= period_end),
    fills AS (
        SELECT p.period_id, d.medication_key, d.handed_over_date AS fill_date, d.days_supply, d.dispense_id,
               (d.handed_over_date - DATE '1970-01-01')::BIGINT AS fill_day
        FROM per p
        JOIN staging.dispenses d
          ON d.source = p.source AND d.patient_id = p.patient_id
         AND d.handed_over_date BETWEEN p.period_start AND p.period_end
        JOIN mart_dispense_statuses st ON st.status = d.status
        WHERE d.days_supply > 0 AND d.medication_key IS NOT NULL
    ),
    cum AS (
        SELECT *, coalesce(sum(days_supply) OVER (
                      PARTITION BY period_id, medication_key ORDER BY fill_date, dispense_id
                      ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)::BIGINT AS supply_before
        FROM fills
    ),
    shifted AS (
        SELECT *, supply_before + max(fill_day - supply_before) OVER (
                      PARTITION BY period_id, medication_key ORDER BY fill_date, dispense_id
                      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS start_day
        FROM cum
    ),
    idx AS (
        SELECT period_id, min(fill_date) AS index_date, count(*) AS fills,
               count(DISTINCT fill_date) AS fill_dates, count(DISTINCT medication_key) AS drugs
        FROM fills GROUP BY period_id
    ),
    days AS (
        SELECT DISTINCT period_id, unnest(range(start_day, start_day + days_supply)) AS day FROM shifted
    ),
    covered AS (
        SELECT d.period_id, count(*) AS days_covered
        FROM days d JOIN idx i USING (period_id) JOIN per p USING (period_id)
        WHERE d.day BETWEEN i.index_date - DATE '1970-01-01' AND p.period_end - DATE '1970-01-01'
        GROUP BY d.period_id
    )
    SELECT p.period_id, p.source, p.patient_id, p.period_start, p.period_end,
           coalesce(i.fills, 0)::INTEGER AS fills, coalesce(i.fill_dates, 0)::INTEGER AS fill_dates,
           coalesce(i.drugs, 0)::INTEGER AS drugs, i.index_date,
           CASE WHEN i.fill_dates >= t.pdc_min_fills THEN (p.period_end - i.index_date + 1)::INTEGER END
               AS days_in_period,
           CASE WHEN i.fill_dates >= t.pdc_min_fills THEN coalesce(c.days_covered, 0)::INTEGER END
               AS days_covered,
           CASE WHEN i.fill_dates >= t.pdc_min_fills
                THEN coalesce(c.days_covered, 0) / (p.period_end - i.index_date + 1) END AS pdc,
           CASE WHEN i.fill_dates >= t.pdc_min_fills
                THEN coalesce(c.days_covered, 0) / (p.period_end - i.index_date + 1) >= t.pdc_threshold END
               AS adherent
    FROM per p
    CROSS JOIN mart_params t
    LEFT JOIN idx i USING (period_id)
    LEFT JOIN covered c USING (period_id)
    """  # noqa: S608 - `periods` is a module-chosen relation name


def compute_pdc(con: duckdb.DuckDBPyConnection, periods: str, target: str) -> None:
    """Create temp table `target` with the PDC of every period in relation `periods`."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE {target} AS {pdc_sql(periods)}")


# Patient x period rows: every patient with a session or a counted dispense in the period. Periods:
# calendar year (the PQA measurement year, default), quarter, or 'all' (first event to the reference
# date); a period still running ends on the reference date, so days not yet lived are not "uncovered".
ADHERENCE_PERIODS_SQL = """
CREATE OR REPLACE TEMP TABLE _adherence_periods AS
WITH events AS (
    SELECT source, patient_id, session_date AS d FROM staging.sessions
    UNION ALL
    SELECT d.source, d.patient_id, d.handed_over_date
    FROM staging.dispenses d JOIN mart_dispense_statuses st ON st.status = d.status
    WHERE d.patient_id IS NOT NULL
),
kept AS (
    SELECT e.source, e.patient_id, e.d, t.adherence_period, t.as_of_date
    FROM events e CROSS JOIN mart_params t
    WHERE e.d IS NOT NULL AND e.d <= t.as_of_date
),
starts AS (
    SELECT DISTINCT source, patient_id, adherence_period, as_of_date,
           CASE adherence_period
               WHEN 'year' THEN date_trunc('year', d)::DATE
               WHEN 'quarter' THEN date_trunc('quarter', d)::DATE
               ELSE (SELECT min(d) FROM kept) END AS period_start
    FROM kept
)
SELECT source, patient_id, period_start,
       least(CASE adherence_period
                 WHEN 'year' THEN (period_start + INTERVAL 1 YEAR - INTERVAL 1 DAY)::DATE
                 WHEN 'quarter' THEN (period_start + INTERVAL 3 MONTH - INTERVAL 1 DAY)::DATE
                 ELSE as_of_date END, as_of_date) AS period_end,
       adherence_period AS period_type,
       source || '|' || patient_id || '|' || strftime(period_start, '%Y-%m-%d') AS period_id
FROM starts
"""

ADHERENCE_SQL = """
CREATE OR REPLACE TABLE marts.adherence AS
WITH ses AS (
    SELECT p.period_id, count(*) AS sessions_attended, count(DISTINCT s.episode_id) AS episodes,
           arg_max(s.practitioner_id, (s.session_start, s.encounter_id)) AS practitioner_id,
           arg_max(s.clinic_id, (s.session_start, s.encounter_id)) AS clinic_id
    FROM _adherence_periods p
    JOIN staging.sessions s ON s.source = p.source AND s.patient_id = p.patient_id
                           AND s.session_date BETWEEN p.period_start AND p.period_end
    GROUP BY p.period_id
),
per_session AS (   -- one row per measured session, patient and clinician WAI side by side
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
meas AS (
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
    JOIN per_session m ON m.source = p.source AND m.patient_id = p.patient_id
                      AND m.session_date BETWEEN p.period_start AND p.period_end
    GROUP BY p.period_id
),
appt AS (
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
    coalesce(pdc.fills, 0) > 0 AS on_medication,
    pdc.index_date AS pdc_index_date,
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
    t.pdc_threshold, t.pdc_min_fills, t.dai10_positive_above, t.early_sessions
FROM _adherence_periods p
CROSS JOIN mart_params t
LEFT JOIN _adherence_pdc pdc ON pdc.period_id = p.period_id
LEFT JOIN ses ON ses.period_id = p.period_id
LEFT JOIN meas m ON m.period_id = p.period_id
LEFT JOIN appt a ON a.period_id = p.period_id
ORDER BY patient_key, p.period_start
"""


def build_adherence(con: duckdb.DuckDBPyConnection) -> int:
    """(Re)build marts.adherence (one row per patient x adherence period); returns its row count."""
    con.execute(ADHERENCE_PERIODS_SQL)
    compute_pdc(con, "_adherence_periods", "_adherence_pdc")
    con.execute(ADHERENCE_SQL)
    return int(con.execute("SELECT count(*) FROM marts.adherence").fetchall()[0][0])
