-- The adherence periods behind marts.alliance_associations: One row per patient x adherence period with
-- alliance by rater, MARS, DAI-10 and PDC, and the therapist (the cluster of its bootstrap intervals).
SELECT patient_key, period_start, mean_alliance_patient, mean_alliance_clinician, mars_mean, dai10_mean, pdc,
       therapist_key
FROM marts.adherence
ORDER BY patient_key, period_start;
