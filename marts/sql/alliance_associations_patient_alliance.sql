-- The patients behind the therapist ICC of marts.alliance_associations: One row per therapist x patient
-- with the patient's mean patient-rated WAI-SR over the sessions with that therapist.
SELECT therapist_key, avg(wai_sr_mean) AS alliance
FROM marts.alliance_sessions
WHERE therapist_key IS NOT NULL AND wai_sr_mean IS NOT NULL
GROUP BY therapist_key, patient_key
ORDER BY therapist_key, patient_key;
