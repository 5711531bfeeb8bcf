-- One row per current response: which path it takes (scored, unmapped or excluded) and why.
-- Status first, then the form, then its answers: every response takes exactly one route.
CREATE OR REPLACE TEMP TABLE response_routes AS
WITH answers_per_response AS (
    SELECT source, response_id,
           count(*) AS answers,
           count(*) FILTER (WHERE role = 'item') AS item_answers,
           count(*) FILTER (WHERE role IS NULL) AS unmapped_answers,
           count(*) FILTER (WHERE role = 'item' AND score IS NULL) AS unscoreable,
           string_agg(DISTINCT link_id, ', ' ORDER BY link_id) FILTER (WHERE role IS NULL) AS unmapped_links,
           string_agg('item ' || item_number || ' (' || link_id || '): ' || answer_text, '; '
                      ORDER BY item_number, link_id) FILTER (WHERE role = 'item' AND score IS NULL)
               AS unscoreable_detail,
           max(numeric_value) FILTER (WHERE role = 'total') AS reported_total,
           string_agg(DISTINCT score_source, ',' ORDER BY score_source) AS score_sources,
           -- the form's own scores against the registry's keying, on the items the registry keys
           count(form_score) FILTER (WHERE score IS NOT NULL) AS form_scores_compared,
           string_agg('item ' || item_number || ' (' || answer_text || '): form ' || printf('%g', form_score)
                      || ', registry ' || printf('%g', score), '; ' ORDER BY item_number, link_id)
               FILTER (WHERE form_score IS DISTINCT FROM score AND form_score IS NOT NULL AND score IS NOT NULL)
               AS form_score_mismatches
    FROM answer_scores GROUP BY ALL
)
SELECT response.*,
       coalesce(per.answers, 0) AS answers, coalesce(per.unmapped_answers, 0) AS unmapped_answers,
       per.reported_total, per.score_sources,
       coalesce(per.form_scores_compared, 0) AS form_scores_compared, per.form_score_mismatches,
       CASE
           WHEN response.status = 'entered-in-error' THEN 'excluded'
           WHEN response.status IS DISTINCT FROM 'completed' AND response.status IS DISTINCT FROM 'amended'
               THEN 'excluded'
           WHEN response.instrument IS NULL THEN 'unmapped'
           WHEN coalesce(per.answers, 0) > 0 AND per.item_answers = 0 THEN 'unmapped'
           WHEN coalesce(per.unscoreable, 0) > 0 THEN 'unmapped'
           ELSE 'scored'
       END AS route,
       CASE
           WHEN response.status = 'entered-in-error' THEN 'withdrawn: entered-in-error'
           WHEN response.status IN ('in-progress', 'stopped') THEN 'not finished: ' || response.status
           WHEN response.status IS DISTINCT FROM 'completed' AND response.status IS DISTINCT FROM 'amended'
               THEN 'status not scoreable: ' || coalesce(response.status, '(none)')
           WHEN response.instrument IS NULL THEN response.form_reason
           WHEN coalesce(per.answers, 0) > 0 AND per.item_answers = 0 THEN 'unmapped items'
           WHEN coalesce(per.unscoreable, 0) > 0 THEN 'unscoreable answer'
       END AS route_reason,
       CASE
           WHEN response.status = 'entered-in-error'
               THEN 'the newest version marks the response entered-in-error; any earlier score is withdrawn'
           WHEN response.status IN ('in-progress', 'stopped') THEN 'only completed and amended responses are scored'
           WHEN response.instrument IS NULL THEN response.form_detail
           WHEN coalesce(per.answers, 0) > 0 AND per.item_answers = 0
               THEN 'no answered linkId maps to an item of ' || response.instrument || ': ' || per.unmapped_links
           WHEN coalesce(per.unscoreable, 0) > 0
               THEN 'no score in the form or the registry for ' || per.unscoreable_detail
       END AS route_detail
FROM responses_with_forms AS response
LEFT JOIN answers_per_response AS per USING (source, response_id);
