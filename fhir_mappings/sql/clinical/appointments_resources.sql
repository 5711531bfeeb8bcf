-- The current version of each Appointment (the current_version macro: numeric version order, tombstones
-- left out), as the (source, id, resource) relation the appointments ViewDefinition reads
-- (fhir_mappings/views/definitions/appointments.json, compiled by fhir_mappings/clinical/tables.py).
CREATE OR REPLACE TEMP VIEW appointments_resources AS
SELECT source, id, resource
FROM current_version('raw.appointment');
