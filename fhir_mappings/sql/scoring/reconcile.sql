-- Every current response lands in exactly one of measure_scores / unmapped / excluded: the counts
-- that prove it (fhir_mappings.scoring.reconcile computes `unaccounted` from them).
SELECT (SELECT count(*) FROM staging.questionnaire_responses) AS responses,
       (SELECT count(DISTINCT (source, response_id)) FROM staging.measure_scores) AS scored_responses,
       (SELECT count(*) FROM staging.unmapped_responses) AS unmapped_responses,
       (SELECT count(*) FROM staging.excluded_responses) AS excluded_responses,
       (SELECT count(*) FROM staging.measure_scores) AS score_rows,
       (SELECT count(*) FILTER (WHERE is_valid) FROM staging.measure_scores) AS valid_score_rows;
