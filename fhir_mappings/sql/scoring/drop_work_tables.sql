-- Scoring's temporary tables (also dropped after a failed run, so a retry starts clean).
DROP VIEW IF EXISTS scoreable_response_versions;
DROP TABLE IF EXISTS responses_with_forms;
DROP TABLE IF EXISTS form_answer_scores;
DROP TABLE IF EXISTS form_scores_by_system_code;
DROP TABLE IF EXISTS form_scores_by_code;
DROP TABLE IF EXISTS form_scores_by_integer;
DROP TABLE IF EXISTS answer_scores;
DROP TABLE IF EXISTS response_routes;
DROP TABLE IF EXISTS item_scores;
DROP TABLE IF EXISTS registry_instruments;
DROP TABLE IF EXISTS registry_scale_items;
DROP TABLE IF EXISTS registry_items;
DROP TABLE IF EXISTS registry_answer_scores;
DROP TABLE IF EXISTS registry_item_scores;
DROP TABLE IF EXISTS registry_severity_bands;
