-- staging.instrument_scales: one row per instrument x scale of the registry, with its rule, ranges,
-- missing-item rule, default rater and the registry file it came from (for checks and BI).
CREATE OR REPLACE TABLE staging.instrument_scales AS
SELECT scale.instrument, instrument_def.domain, scale.scale, any_value(scale.rule) AS rule,
       any_value(scale.scale_lo) AS scale_min, any_value(scale.scale_hi) AS scale_max,
       count(*)::INTEGER AS items_expected,
       any_value(instrument_def.item_lo) AS item_min, any_value(instrument_def.item_hi) AS item_max,
       any_value(instrument_def.missing_rule) AS missing_rule,
       any_value(instrument_def.max_missing)::INTEGER AS max_missing,
       any_value(instrument_def.default_rater) AS default_rater,
       any_value(instrument_def.registry_file) AS registry_file,
       any_value(instrument_def.registry_version) AS registry_version
FROM registry_scale_items AS scale
JOIN registry_instruments AS instrument_def USING (instrument)
GROUP BY scale.instrument, instrument_def.domain, scale.scale
ORDER BY scale.instrument, scale.scale;
