-- The adherence periods behind marts.alliance_associations: One row per patient x adherence period with
-- alliance by rater, MARS, DAI-10 and PDC.
SELECT patient_key, period_start, mean_alliance_patient, mean_alliance_clinician, mars_mean, dai10_mean, pdc
FROM marts.adherence
ORDER BY patient_key, period_start;
