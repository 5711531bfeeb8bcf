-- One chunk of the current QuestionnaireResponses: those stored in rows $first_row <= rowid < $end_row of
-- raw.questionnaire_response (every version has one row, so every current response falls in exactly one
-- chunk). The compiled answers ViewDefinition reads this table; fhir_mappings/flatten.py runs this file,
-- the view, then questionnaire_answers.sql, once per chunk. A range of rows reads only its own row
-- groups: a chunk by a hash of the id read every stored response's JSON once per chunk (at a million
-- responses, 6.3 s against 0.6 s per chunk on one thread).
CREATE OR REPLACE TEMP TABLE response_chunk AS
SELECT response.source, response.id, response.version_id, response.resource
FROM raw.questionnaire_response AS response
JOIN current_response_versions USING (source, id, version_id)
WHERE response.rowid >= $first_row AND response.rowid < $end_row;
