-- The current version of each EpisodeOfCare (the current_version macro: numeric version order, tombstones
-- left out), as the (source, id, resource) relation the episodes ViewDefinition reads
-- (fhir_mappings/views/definitions/episodes.json, compiled by fhir_mappings/clinical/tables.py).
CREATE OR REPLACE TEMP VIEW episodes_resources AS
SELECT source, id, resource
FROM current_version('raw.episode_of_care');
