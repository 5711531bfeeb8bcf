-- Form-declared answer scores, per cited form: exact (system + code), system-insensitive (real forms
-- send LOINC LA codes with and without a system), and integer-valued options. A code given two
-- different scores by one form item is ambiguous and scores nothing.

-- Every scored answer option of the Questionnaire each cited form resolved to.
CREATE OR REPLACE TEMP TABLE form_answer_scores AS
SELECT form.source, form.questionnaire,
       option.link_id, option.system, option.code, option.value_integer, option.score, option.score_source
FROM staging.response_forms AS form
JOIN staging.questionnaire_answer_scores AS option
  ON option.source = form.questionnaire_source AND option.questionnaire_id = form.questionnaire_id;

CREATE OR REPLACE TEMP TABLE form_scores_by_system_code AS
SELECT source, questionnaire, link_id, system, code,
       CASE WHEN count(DISTINCT score) = 1 THEN min(score) END AS score, min(score_source) AS score_source
FROM form_answer_scores WHERE code IS NOT NULL AND system IS NOT NULL GROUP BY ALL;

CREATE OR REPLACE TEMP TABLE form_scores_by_code AS
SELECT source, questionnaire, link_id, code,
       CASE WHEN count(DISTINCT score) = 1 THEN min(score) END AS score, min(score_source) AS score_source
FROM form_answer_scores WHERE code IS NOT NULL GROUP BY ALL;

CREATE OR REPLACE TEMP TABLE form_scores_by_integer AS
SELECT source, questionnaire, link_id, value_integer,
       CASE WHEN count(DISTINCT score) = 1 THEN min(score) END AS score, min(score_source) AS score_source
FROM form_answer_scores WHERE value_integer IS NOT NULL GROUP BY ALL;
