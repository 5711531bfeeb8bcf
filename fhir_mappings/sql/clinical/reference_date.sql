-- The data's reference date: the latest session, appointment or dispense date in the raw layer
-- (mart_params.as_of_date when no reference date is configured).
WITH latest_dates AS (
    SELECT max(fhir_date(resource ->> '$.period.start')) AS latest FROM raw.encounter
    UNION ALL
    SELECT max(fhir_date(resource ->> '$.start')) FROM raw.appointment
    UNION ALL
    SELECT max(fhir_date(resource ->> '$.whenHandedOver')) FROM raw.medication_dispense
)
SELECT max(latest) AS reference_date FROM latest_dates
