CREATE OR REPLACE TABLE staging.medication_requests AS
WITH request_versions AS (
    SELECT source, id, resource, resource -> 'medicationCodeableConcept' AS med
    FROM current_version('raw.medication_request')
)
SELECT rv.source, id AS medication_request_id,
       ref_id(resource -> 'subject' ->> 'reference', 'Patient') AS patient_id,
       resource ->> 'status' AS status,
       resource ->> 'intent' AS intent,
       (med ->> '$.coding[*].code')[1] AS medication_code,
       coalesce((med ->> '$.coding[*].display')[1], med ->> 'text') AS medication_display,
       coalesce((med ->> '$.coding[*].code')[1], med ->> 'text',
                resource -> 'medicationReference' ->> 'reference') AS medication_key,
       fhir_date(resource ->> 'authoredOn') AS authored_on,
       practitioner_of(resource -> 'requester' ->> 'reference', rv.source) AS requester_id,
       TRY_CAST(resource -> 'dispenseRequest' -> 'expectedSupplyDuration' ->> 'value' AS DOUBLE)
           AS expected_supply_days
FROM request_versions rv
ORDER BY rv.source, medication_request_id;
