-- The current version of every landed Questionnaire (the shared `current_version` macro: versionId is
-- ordered as a number, so "10" is newer than "9" when a folder drop has no lastUpdated).
-- Questionnaires are few (tens): fhir_mappings/questionnaires.py walks their items in Python.
SELECT source, id, version_id, last_updated, resource::VARCHAR AS resource
FROM current_version('raw.questionnaire')
ORDER BY source, id;
