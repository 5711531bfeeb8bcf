-- One past the last row of raw.questionnaire_response (0 when empty): fhir_mappings/flatten.py cuts the
-- rows 0 .. this into the chunks of response_chunk.sql.
SELECT coalesce(max(rowid) + 1, 0) FROM raw.questionnaire_response
