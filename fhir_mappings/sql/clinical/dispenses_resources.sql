-- The current version of each MedicationDispense (the current_version macro: numeric version order, tombstones
-- left out), as the (source, id, resource) relation the dispenses ViewDefinition reads
-- (fhir_mappings/views/definitions/dispenses.json, compiled by fhir_mappings/clinical/tables.py).
CREATE OR REPLACE TEMP VIEW dispenses_resources AS
SELECT source, id, resource
FROM current_version('raw.medication_dispense');
