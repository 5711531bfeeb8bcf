-- The sessions behind marts.therapist_alliance (built in Python, marts/therapists.py: variance components,
-- empirical-Bayes shrinkage and funnel limits): One row per attended session with a known therapist,
-- with its patient- and clinician-rated WAI mean.
SELECT therapist_key, clinic_key, patient_key, session_date, wai_sr_mean, wai_clinician_mean
FROM marts.alliance_sessions
WHERE therapist_key IS NOT NULL
ORDER BY therapist_key, patient_key, session_date, session_key;
