-- staging.patients from the patients ViewDefinition's rows (the temp view patients_view: one row per
-- current Patient, fhir_mappings/views/definitions/patients.json). Only derivation here: birth year
-- from a partial date, age and age band at the reference date, the organization id, deceased.
CREATE OR REPLACE TABLE staging.patients AS
SELECT pv.source, pv.patient_id,
       pv.gender,
       TRY_CAST(left(pv.birth_date, 4) AS INTEGER) AS birth_year,
       m.as_of_date AS reference_date,
       age_at(pv.birth_date, m.as_of_date) AS age_years,
       age_band(age_at(pv.birth_date, m.as_of_date)) AS age_band,
       ref_id(pv.managing_organization_reference, 'Organization') AS managing_organization_id,
       pv.active,
       coalesce(pv.deceased_boolean, FALSE) OR pv.deceased_datetime IS NOT NULL AS deceased
FROM patients_view pv CROSS JOIN mart_params m
ORDER BY pv.source, pv.patient_id;
