-- The current version of each Patient (the current_version macro: numeric version order, tombstones
-- left out), as the (source, id, resource) relation the patients ViewDefinition reads
-- (fhir_mappings/views/definitions/patients.json, compiled by fhir_mappings/clinical/tables.py).
CREATE OR REPLACE TEMP VIEW patients_resources AS
SELECT source, id, resource
FROM current_version('raw.patient');
