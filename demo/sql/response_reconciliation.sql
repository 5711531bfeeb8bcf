-- Every staged response is scored, unmapped or excluded: the four counts that must reconcile.
SELECT (SELECT count(*) FROM staging.questionnaire_responses) AS responses,
       (SELECT count(DISTINCT (source, response_id)) FROM staging.measure_scores) AS scored,
       (SELECT count(*) FROM staging.unmapped_responses) AS unmapped,
       (SELECT count(*) FROM staging.excluded_responses) AS excluded;
