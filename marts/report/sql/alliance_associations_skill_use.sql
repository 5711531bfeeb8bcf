-- The skill use x alliance model rows the QI report quotes (marts/moderation.py): every term of the
-- additive and moderation models with estimate, interval, n, detail and whether it is suppressed.
SELECT question_id, x_measure, estimate, ci_lower, ci_upper, ci_level, n, detail, suppressed
FROM {{ schema }}.alliance_associations
WHERE question_id LIKE 'skill_alliance_%'
ORDER BY question_id;
