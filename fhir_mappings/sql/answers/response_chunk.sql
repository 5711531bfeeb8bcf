-- One chunk of the current QuestionnaireResponses: those whose key hashes into chunk $chunk of $chunks
-- (every response falls in exactly one chunk). The compiled answers ViewDefinition reads this table;
-- fhir_mappings/flatten.py runs this file, the view, then questionnaire_answers.sql, once per chunk.
CREATE OR REPLACE TEMP TABLE response_chunk AS
SELECT response.source, response.id, response.version_id, response.resource
FROM raw.questionnaire_response AS response
JOIN current_response_versions USING (source, id, version_id)
WHERE hash(response.source || '/' || response.id) % $chunks = $chunk;
