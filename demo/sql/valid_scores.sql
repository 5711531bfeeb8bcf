-- Valid and invalid total scores per instrument.
SELECT instrument,
       count(*) FILTER (WHERE is_valid) AS valid,
       count(*) FILTER (WHERE NOT is_valid) AS invalid
FROM staging.measure_scores
WHERE scale = 'total'
GROUP BY ALL
ORDER BY 1;
