-- One association the QI report quotes: the row of alliance_associations for $question_id whose method
-- starts with $method (e.g. 'pearson'; the first such method by name when several do), with its estimate,
-- interval, n and whether it is suppressed. No row when the mart has none.
SELECT estimate, ci_lower, ci_upper, n, suppressed
FROM {{ schema }}.alliance_associations
WHERE question_id = $question_id AND method LIKE ($method || '%')
ORDER BY method
LIMIT 1;
