-- PDC (proportion of days covered, Pharmacy Quality Alliance) of every period of a work table of
-- periods, into a temp work table: One row per period with fills, distinct fill dates, drugs
-- (ingredients), the most fill dates of one ingredient or class, unmapped fills and codes, index date,
-- days in period, days covered, pdc and adherent. The caller names both tables (identifier placeholders
-- `periods` and `target`); the periods have (source, patient_id, period_id, period_start, period_end).
-- Needs the temp tables mart_params, mart_dispense_statuses and mart_medication_map.
--
-- Fills: MedicationDispense with a counted status, handed over in the period, daysSupply > 0. The drug
-- is the ingredient of the dispense's code in the declared mapping (mart_medication_map, from
-- marts/reference/medications.yaml), its class the mapping's class; a code the mapping does not know is
-- its own drug in no class, and is counted (unmapped_fills, unmapped_codes), never dropped. PQA: at
-- least pdc_min_fills distinct fill dates *of one ingredient or of one class* are needed (two fills of
-- two unrelated drugs are not a treatment course), and the index date must lie at least
-- pdc_index_min_days (PQA: 91) before the period end, else the period has no PDC (index_too_late): a
-- 35-day "period" from a late first fill is not a measure of adherence. Index date: the first fill in
-- the period; denominator: index date to period end, inclusive. A fill of an ingredient still covered
-- by an earlier fill of the same ingredient starts the day after that supply ends: for fills k of one
-- drug in date order with S_k the supply of the fills before k, the adjusted start is
-- S_k + max over j <= k of (day_j - S_j). A day counts once however many drugs cover it; days after the
-- period end do not count.
CREATE OR REPLACE TEMP TABLE {{ target }} AS
WITH valid_periods AS (
    SELECT * FROM {{ periods }} WHERE period_start <= period_end
),

counted_fills AS (   -- fills with a counted status and a supply, handed over within the period
    SELECT p.period_id, d.handed_over_date AS fill_date, d.days_supply, d.dispense_id,
           (d.handed_over_date - DATE '1970-01-01')::BIGINT AS fill_day,
           -- the drug: the mapped ingredient, else the dispense's own code (or text) as its own drug
           coalesce('ingredient:' || m.ingredient, 'code:' || d.medication_key) AS medication_key,
           -- one ingredient or one class: what "two fills of the same drug or class" groups by
           coalesce('class:' || m.drug_class, 'code:' || d.medication_key) AS fill_group,
           m.code IS NULL AS unmapped,
           CASE WHEN m.code IS NULL THEN coalesce(d.medication_system, '') || '|' || d.medication_key END
               AS unmapped_code
    FROM valid_periods p
    JOIN staging.dispenses d
      ON d.source = p.source AND d.patient_id = p.patient_id
     AND d.handed_over_date BETWEEN p.period_start AND p.period_end
    JOIN mart_dispense_statuses st ON st.status = d.status
    LEFT JOIN mart_medication_map m ON m.system = d.medication_system AND m.code = d.medication_code
    WHERE d.days_supply > 0 AND d.medication_key IS NOT NULL
),

fills_with_prior_supply AS (   -- days supplied by the same drug's earlier fills in the period
    SELECT *, coalesce(sum(days_supply) OVER (
                  PARTITION BY period_id, medication_key ORDER BY fill_date, dispense_id
                  ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)::BIGINT AS supply_before
    FROM counted_fills
),

shifted_fills AS (   -- start day after the earlier fills' supply runs out (a running maximum)
    SELECT *, supply_before + max(fill_day - supply_before) OVER (
                  PARTITION BY period_id, medication_key ORDER BY fill_date, dispense_id
                  ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS start_day
    FROM fills_with_prior_supply
),

group_fill_dates AS (   -- the most distinct fill dates of one ingredient-or-class group per period
    SELECT period_id, max(fill_dates) AS same_drug_or_class_fill_dates
    FROM (SELECT period_id, fill_group, count(DISTINCT fill_date) AS fill_dates
          FROM counted_fills GROUP BY period_id, fill_group)
    GROUP BY period_id
),

period_fills AS (   -- index date (first fill) and fill counts per period
    SELECT f.period_id, min(f.fill_date) AS index_date, count(*) AS fills,
           count(DISTINCT f.fill_date) AS fill_dates, count(DISTINCT f.medication_key) AS drugs,
           any_value(g.same_drug_or_class_fill_dates) AS same_drug_or_class_fill_dates,
           count(*) FILTER (WHERE f.unmapped) AS unmapped_fills,
           count(DISTINCT f.unmapped_code) AS unmapped_codes
    FROM counted_fills f
    JOIN group_fill_dates g USING (period_id)
    GROUP BY f.period_id
),

covered_days AS (   -- each day covered by any drug, once
    SELECT DISTINCT period_id, unnest(range(start_day, start_day + days_supply)) AS day FROM shifted_fills
),

period_coverage AS (   -- covered days from the index date to the period end
    SELECT d.period_id, count(*) AS days_covered
    FROM covered_days d
    JOIN period_fills i USING (period_id)
    JOIN valid_periods p USING (period_id)
    WHERE d.day BETWEEN i.index_date - DATE '1970-01-01' AND p.period_end - DATE '1970-01-01'
    GROUP BY d.period_id
),

measurable_periods AS (   -- enough fill dates, and the index date early enough in the period
    SELECT p.*, i.index_date, i.fills, i.fill_dates, i.drugs, i.same_drug_or_class_fill_dates,
           i.unmapped_fills, i.unmapped_codes,
           i.same_drug_or_class_fill_dates >= t.pdc_min_fills AS enough_fills,
           p.period_end - i.index_date < t.pdc_index_min_days AS index_too_late,
           i.same_drug_or_class_fill_dates >= t.pdc_min_fills AND p.period_end - i.index_date >= t.pdc_index_min_days
               AS measurable
    FROM valid_periods p
    CROSS JOIN mart_params t
    LEFT JOIN period_fills i USING (period_id)
)

SELECT p.period_id, p.source, p.patient_id, p.period_start, p.period_end,
       coalesce(p.fills, 0)::INTEGER AS fills, coalesce(p.fill_dates, 0)::INTEGER AS fill_dates,
       coalesce(p.drugs, 0)::INTEGER AS drugs,
       coalesce(p.same_drug_or_class_fill_dates, 0)::INTEGER AS same_drug_or_class_fill_dates,
       coalesce(p.unmapped_fills, 0)::INTEGER AS unmapped_fills,
       coalesce(p.unmapped_codes, 0)::INTEGER AS unmapped_codes, p.index_date,
       CASE WHEN p.enough_fills THEN p.index_too_late END AS index_too_late,
       CASE WHEN p.measurable THEN (p.period_end - p.index_date + 1)::INTEGER END AS days_in_period,
       CASE WHEN p.measurable THEN coalesce(c.days_covered, 0)::INTEGER END AS days_covered,
       CASE WHEN p.measurable THEN coalesce(c.days_covered, 0) / (p.period_end - p.index_date + 1) END
           AS pdc,
       CASE WHEN p.measurable
            THEN coalesce(c.days_covered, 0) / (p.period_end - p.index_date + 1) >= t.pdc_threshold END
           AS adherent
FROM measurable_periods p
CROSS JOIN mart_params t
LEFT JOIN period_coverage c USING (period_id);
