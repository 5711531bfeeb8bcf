-- The instrument registry as small temporary tables the scoring SQL joins against
-- (fhir_mappings/scoring.py registers one DataFrame per table as `<table>_frame`).

-- One row per instrument: item range, missing-item rule, default rater, risk item, registry file.
CREATE OR REPLACE TEMP TABLE registry_instruments AS SELECT * FROM registry_instruments_frame;
-- One row per instrument x scale x item number of that scale, with the scale's rule and range.
CREATE OR REPLACE TEMP TABLE registry_scale_items AS SELECT * FROM registry_scale_items_frame;
-- One row per instrument item, with whether it is reverse-keyed.
CREATE OR REPLACE TEMP TABLE registry_items AS SELECT * FROM registry_items_frame;
-- One row per instrument x answer code of its answer table (e.g. LOINC LA codes) with its score.
CREATE OR REPLACE TEMP TABLE registry_answer_scores AS SELECT * FROM registry_answer_scores_frame;
-- One row per instrument item x answer key scored by the item itself (yes/no, true/false items).
CREATE OR REPLACE TEMP TABLE registry_item_scores AS SELECT * FROM registry_item_scores_frame;
-- One row per instrument x severity band of the total: [lo, hi_excl).
CREATE OR REPLACE TEMP TABLE registry_severity_bands AS SELECT * FROM registry_severity_bands_frame;
