-- Every distinct questionnaire value the current responses cite, per source ('' when none is named):
-- recognition works per form, never per response.
SELECT DISTINCT source, coalesce(questionnaire, '') AS questionnaire
FROM staging.questionnaire_responses;
