-- staging.questionnaire_answers: one row per answer at any depth of the current version of each
-- QuestionnaireResponse. Created empty here; questionnaire_answers.sql fills it one chunk of responses
-- at a time (the recursive walk holds its working set in memory, so chunks keep memory flat).
CREATE OR REPLACE TABLE staging.questionnaire_answers (
    source VARCHAR,
    response_id VARCHAR,
    version_id VARCHAR,
    status VARCHAR,
    questionnaire VARCHAR,
    questionnaire_url VARCHAR,
    questionnaire_version VARCHAR,
    subject_ref VARCHAR,
    encounter_ref VARCHAR,
    source_ref VARCHAR,
    author_ref VARCHAR,
    authored_at TIMESTAMPTZ,
    depth INTEGER,            -- 1 for top-level items
    link_id VARCHAR,
    item_path VARCHAR,        -- linkIds from the top, joined by ' > '
    order_path VARCHAR,       -- zero-padded positions from the top ('0001.0002'): sorts in form order
    answer_index BIGINT,      -- position of the answer within its item (1-based)
    answer_type VARCHAR,      -- coding | integer | decimal | boolean | string | date | dateTime | quantity | other
    coding_system VARCHAR,
    coding_code VARCHAR,
    coding_display VARCHAR,
    value_integer BIGINT,
    value_decimal DOUBLE,
    value_boolean BOOLEAN,
    value_string VARCHAR,
    value_date DATE,
    value_datetime VARCHAR,
    quantity_value DOUBLE,
    quantity_unit VARCHAR
);
