-- The current version of each Encounter (the current_version macro: numeric version order, tombstones
-- left out), as the (source, id, resource) relation the encounters ViewDefinition reads
-- (fhir_mappings/views/definitions/encounters.json, compiled by fhir_mappings/clinical/tables.py).
CREATE OR REPLACE TEMP VIEW encounters_resources AS
SELECT source, id, resource
FROM current_version('raw.encounter');
