-- staging.dispenses from the dispenses ViewDefinition's rows (the temp view dispenses_view, one row
-- per current MedicationDispense, fhir_mappings/views/definitions/dispenses.json). Only derivation
-- here: the medication key, days supply in days, references parsed to ids, the hand-over's dates.
CREATE OR REPLACE TABLE staging.dispenses AS
SELECT source, dispense_id,
       ref_id(subject_reference, 'Patient') AS patient_id,
       status,
       medication_system,
       medication_code,
       coalesce(medication_display, medication_text) AS medication_display,
       -- what "the same drug" means for PDC: the code, else the text, else the referenced Medication
       coalesce(medication_code, medication_text, medication_reference) AS medication_key,
       TRY_CAST(when_handed_over AS TIMESTAMPTZ) AS when_handed_over,
       fhir_date(when_handed_over) AS handed_over_date,
       CAST(round(CASE WHEN coalesce(days_supply_code, days_supply_unit) IN ('wk', 'week', 'weeks')
                           THEN days_supply_value * 7
                       WHEN coalesce(days_supply_code, days_supply_unit) IN ('mo', 'month', 'months')
                           THEN days_supply_value * 30
                       ELSE days_supply_value END) AS INTEGER) AS days_supply,
       quantity_value AS quantity,
       ref_id(authorizing_prescription_reference, 'MedicationRequest') AS medication_request_id
FROM dispenses_view
ORDER BY source, dispense_id;
