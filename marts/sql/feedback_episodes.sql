-- Feedback (marts/feedback.py): One row per treatment episode: who it belongs to, whether it is
-- closed (closed episodes train the curves, open ones are judged), when it started (the validation
-- trains on earlier episodes and tests on later ones) and its latest attended session.
SELECT te.source, te.episode_id, te.patient_id, te.practitioner_id, te.clinic_id, te.closed,
       te.period_start, te.sessions_attended, te.last_session_date
FROM staging.treatment_episodes te
ORDER BY te.source, te.episode_id;
