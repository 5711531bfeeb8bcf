-- Clinical staging macros (after pipelines/sql/macros.sql): a Practitioner or PractitionerRole
-- reference resolved to a Practitioner id, roles through staging.practitioner_roles of the same source.
CREATE OR REPLACE TEMP MACRO practitioner_of(ref, src) AS
    coalesce(ref_id(ref, 'Practitioner'),
             (SELECT pr.practitioner_id FROM staging.practitioner_roles pr
              WHERE pr.source = src AND pr.role_id = ref_id(ref, 'PractitionerRole')));
