-- The current version of every QuestionnaireResponse, as keys only: the window over raw is the costly
-- part, so it runs once and every chunk of the flatten joins these keys back to raw.
-- Amended versions supersede earlier ones; an entered-in-error version is itself the newest, and its
-- status travels with the answers (scoring withdraws it).
CREATE SCHEMA IF NOT EXISTS staging;

CREATE OR REPLACE TEMP TABLE current_response_versions AS
SELECT source, id, version_id
FROM current_version('raw.questionnaire_response');
