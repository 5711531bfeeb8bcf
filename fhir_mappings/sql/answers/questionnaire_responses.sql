-- staging.questionnaire_responses: one row per QuestionnaireResponse (its current version), with the
-- questionnaire it cites (canonical split into url and version) and its references as sent.
CREATE OR REPLACE TABLE staging.questionnaire_responses AS
SELECT response.source,
       response.id AS response_id,
       response.version_id,
       response.resource ->> 'status' AS status,
       response.resource ->> 'questionnaire' AS questionnaire,
       split_part(response.resource ->> 'questionnaire', '|', 1) AS questionnaire_url,
       nullif(split_part(response.resource ->> 'questionnaire', '|', 2), '') AS questionnaire_version,
       response.resource -> 'subject' ->> 'reference' AS subject_ref,
       response.resource -> 'encounter' ->> 'reference' AS encounter_ref,
       response.resource -> 'source' ->> 'reference' AS source_ref,
       response.resource -> 'author' ->> 'reference' AS author_ref,
       TRY_CAST(response.resource ->> 'authored' AS TIMESTAMPTZ) AS authored_at,
       response.last_updated
FROM raw.questionnaire_response AS response
JOIN current_response_versions USING (source, id, version_id);
