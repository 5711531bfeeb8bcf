-- staging.measure_scores: one row per scored response x scale of its instrument, valid or not (with
-- the reason), with the rater, the embedded total and its mismatch, the severity band, the risk flag
-- and the scoring provenance. Reads the work tables of the earlier scoring files.
CREATE OR REPLACE TABLE staging.measure_scores AS
WITH scale_sums AS (
    -- Per scored response x scale: items expected and answered, raw sum and mean, and the items
    -- answered more than once or outside the item range.
    SELECT route.source, route.response_id, scale.scale, any_value(scale.rule) AS rule,
           any_value(scale.scale_lo) AS scale_lo, any_value(scale.scale_hi) AS scale_hi,
           count(*)::INTEGER AS items_expected,
           count(item.score)::INTEGER AS items_answered,
           sum(item.score) AS raw_sum, avg(item.score) AS raw_mean,
           string_agg(scale.item_number::VARCHAR, ', ' ORDER BY scale.item_number)
               FILTER (WHERE item.n_answers > 1) AS multi_items,
           string_agg('item ' || scale.item_number || ' = ' || printf('%g', item.raw_score), ', '
                      ORDER BY scale.item_number)
               FILTER (WHERE item.out_of_range) AS out_of_range
    FROM response_routes AS route
    JOIN registry_scale_items AS scale ON scale.instrument = route.instrument
    LEFT JOIN item_scores AS item
           ON item.source = route.source AND item.response_id = route.response_id
          AND item.item_number = scale.item_number
    WHERE route.route = 'scored'
    GROUP BY route.source, route.response_id, scale.scale
),

risk_flags AS (
    -- The instrument's risk item (e.g. PHQ-9 item 9) scored above its threshold.
    SELECT item.source, item.response_id, item.score > instrument_def.risk_above AS risk_flag
    FROM item_scores AS item
    JOIN registry_instruments AS instrument_def
      ON instrument_def.instrument = item.instrument AND item.item_number = instrument_def.risk_item
),

scales_with_reasons AS (
    -- Why a scale cannot be scored, decided before its value: duplicate answers, out-of-range items,
    -- nothing answered, or more items missing than the instrument's missing-item rule allows.
    SELECT scale_sums.*,
           route.* EXCLUDE (source, response_id),
           instrument_def.* EXCLUDE (instrument),
           scale_sums.items_expected - scale_sums.items_answered AS n_missing,
           CASE
               WHEN scale_sums.multi_items IS NOT NULL
                   THEN 'item(s) ' || scale_sums.multi_items || ' answered more than once'
               WHEN scale_sums.out_of_range IS NOT NULL
                   THEN scale_sums.out_of_range || ' outside the item range '
                        || printf('%g', instrument_def.item_lo) || '..' || printf('%g', instrument_def.item_hi)
               WHEN scale_sums.items_answered = 0 THEN 'no items answered'
               WHEN scale_sums.items_answered < scale_sums.items_expected
                    AND instrument_def.missing_rule = 'prorate'
                    AND scale_sums.items_expected - scale_sums.items_answered > instrument_def.max_missing
                   THEN (scale_sums.items_expected - scale_sums.items_answered) || ' of '
                        || scale_sums.items_expected
                        || ' items missing (at most ' || instrument_def.max_missing || ' can be prorated)'
               WHEN scale_sums.items_answered < scale_sums.items_expected
                    AND instrument_def.missing_rule = 'invalid'
                   THEN (scale_sums.items_expected - scale_sums.items_answered) || ' of '
                        || scale_sums.items_expected || ' items missing (this instrument allows none)'
           END AS pre_reason
    FROM scale_sums
    JOIN response_routes AS route USING (source, response_id)
    JOIN registry_instruments AS instrument_def ON instrument_def.instrument = route.instrument
),

scale_values AS (
    -- The scale's value: the mean, or the sum prorated over the items answered; a prorated sum is
    -- rounded to the nearest whole number (halves up) where the registry says so (missing.round).
    SELECT *,
           CASE WHEN pre_reason IS NULL THEN
               CASE WHEN rule = 'mean' THEN raw_mean
                    WHEN items_answered < items_expected AND prorate_round = 'nearest'
                        THEN floor(raw_sum * items_expected / items_answered + 0.5)
                    ELSE raw_sum * items_expected / items_answered END
           END AS value
    FROM scales_with_reasons
)

SELECT scale_values.source, scale_values.response_id, scale_values.version_id, scale_values.status,
       scale_values.questionnaire, scale_values.questionnaire_id,
       scale_values.instrument, scale_values.domain, scale_values.scale,
       CASE WHEN scale_values.value BETWEEN scale_values.scale_lo AND scale_values.scale_hi
            THEN scale_values.value END AS score,
       scale_values.scale_lo AS scale_min, scale_values.scale_hi AS scale_max,
       scale_values.items_answered, scale_values.items_expected,
       (scale_values.value BETWEEN scale_values.scale_lo AND scale_values.scale_hi) IS TRUE AS is_valid,
       CASE
           WHEN scale_values.pre_reason IS NOT NULL THEN scale_values.pre_reason
           WHEN NOT scale_values.value BETWEEN scale_values.scale_lo AND scale_values.scale_hi
               THEN 'score ' || printf('%g', scale_values.value) || ' outside the scale range '
                    || printf('%g', scale_values.scale_lo) || '..' || printf('%g', scale_values.scale_hi)
       END AS invalid_reason,
       scale_values.n_missing > 0 AND scale_values.value IS NOT NULL AS prorated,
       -- Who rated: the resource type `source` points to, else the instrument's default rater.
       CASE scale_values.source_type
            WHEN 'Patient' THEN 'patient'
            WHEN 'Practitioner' THEN 'clinician'
            WHEN 'PractitionerRole' THEN 'clinician'
            WHEN 'RelatedPerson' THEN 'other'
            ELSE scale_values.default_rater
       END AS rater,
       CASE WHEN scale_values.source_type IS NULL THEN 'default' ELSE 'source' END AS rater_basis,
       CASE WHEN scale_values.scale = 'total' THEN scale_values.reported_total END AS reported_total,
       CASE WHEN scale_values.scale = 'total' AND scale_values.reported_total IS NOT NULL
                 AND scale_values.value IS NOT NULL
            THEN abs(scale_values.reported_total - scale_values.value) > 1e-6 END AS reported_total_mismatch,
       -- Where the registry keys an item (MARS, DAI-10), the form's own answer scores are compared with
       -- it (the registry's score is the one used): NULL when the form sends none, else whether any differ.
       CASE WHEN scale_values.scale = 'total' AND scale_values.form_scores_compared > 0
            THEN scale_values.form_score_mismatches IS NOT NULL END AS form_score_mismatch,
       CASE WHEN scale_values.scale = 'total' THEN scale_values.form_score_mismatches END
           AS form_score_mismatch_detail,
       band.band AS severity_band,
       risk_flags.risk_flag,
       scale_values.authored_at, scale_values.patient_ref, scale_values.encounter_ref,
       -- The practitioner: `source` when a practitioner rated, else `author` when a practitioner recorded.
       CASE WHEN scale_values.source_type IN ('Practitioner', 'PractitionerRole')
                THEN coalesce(ref_key(scale_values.source_ref), scale_values.source_ref)
            WHEN scale_values.author_type IN ('Practitioner', 'PractitionerRole')
                THEN coalesce(ref_key(scale_values.author_ref), scale_values.author_ref)
       END AS practitioner_ref,
       scale_values.source_ref, scale_values.author_ref,
       scale_values.registry_file, scale_values.registry_version, scale_values.score_sources,
       scale_values.unmapped_answers::INTEGER AS unmapped_answers
FROM scale_values
LEFT JOIN registry_severity_bands AS band
       ON band.instrument = scale_values.instrument AND scale_values.scale = 'total'
      AND scale_values.value BETWEEN scale_values.scale_lo AND scale_values.scale_hi
      AND scale_values.value >= band.lo AND scale_values.value < band.hi_excl
LEFT JOIN risk_flags
       ON risk_flags.source = scale_values.source AND risk_flags.response_id = scale_values.response_id
ORDER BY scale_values.source, scale_values.response_id, scale_values.scale;
