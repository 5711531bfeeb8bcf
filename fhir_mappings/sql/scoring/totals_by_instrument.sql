-- Valid and invalid total scores per instrument (run metadata of the scoring step).
SELECT instrument,
       count(*) FILTER (WHERE is_valid) AS valid_totals,
       count(*) FILTER (WHERE NOT is_valid) AS invalid_totals
FROM staging.measure_scores
WHERE scale = 'total'
GROUP BY instrument
ORDER BY instrument
