-- What recognition needs of each landed Questionnaire (fhir_mappings.recognition.questionnaire_defs).
SELECT source, questionnaire_id, url, version, codes, identifiers,
       last_updated::VARCHAR AS last_updated
FROM staging.questionnaires;
