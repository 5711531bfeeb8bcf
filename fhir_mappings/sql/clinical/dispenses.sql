CREATE OR REPLACE TABLE staging.dispenses AS
WITH dispense_versions AS (
    SELECT source, id, resource,
           resource -> 'medicationCodeableConcept' AS med,
           TRY_CAST(resource -> 'daysSupply' ->> 'value' AS DOUBLE) AS supply,
           coalesce(resource -> 'daysSupply' ->> 'code', resource -> 'daysSupply' ->> 'unit') AS unit
    FROM current_version('raw.medication_dispense')
)
SELECT source, id AS dispense_id,
       ref_id(resource -> 'subject' ->> 'reference', 'Patient') AS patient_id,
       resource ->> 'status' AS status,
       (med ->> '$.coding[*].system')[1] AS medication_system,
       (med ->> '$.coding[*].code')[1] AS medication_code,
       coalesce((med ->> '$.coding[*].display')[1], med ->> 'text') AS medication_display,
       -- what "the same drug" means for PDC: the code, else the text, else the referenced Medication
       coalesce((med ->> '$.coding[*].code')[1], med ->> 'text',
                resource -> 'medicationReference' ->> 'reference') AS medication_key,
       TRY_CAST(resource ->> 'whenHandedOver' AS TIMESTAMPTZ) AS when_handed_over,
       fhir_date(resource ->> 'whenHandedOver') AS handed_over_date,
       CAST(round(CASE WHEN unit IN ('wk', 'week', 'weeks') THEN supply * 7
                       WHEN unit IN ('mo', 'month', 'months') THEN supply * 30
                       ELSE supply END) AS INTEGER) AS days_supply,
       TRY_CAST(resource -> 'quantity' ->> 'value' AS DOUBLE) AS quantity,
       ref_id((resource ->> '$.authorizingPrescription[*].reference')[1], 'MedicationRequest')
           AS medication_request_id
FROM dispense_versions
ORDER BY source, dispense_id;
