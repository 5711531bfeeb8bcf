-- One row per current response with the form it cites resolved (staging.response_forms), the patient
-- and encounter it points to, and the resource types of its `source` and `author` (who rated it).
-- References go through the shared macros: `Type/id` whatever the form (relative, absolute,
-- versioned); a reference that is not literal (contained, logical, malformed) is kept as sent.
CREATE OR REPLACE TEMP TABLE responses_with_forms AS
SELECT response.source, response.response_id, response.version_id, response.status,
       response.questionnaire,
       form.questionnaire_id, form.instrument,
       form.reason AS form_reason, form.detail AS form_detail,
       coalesce(ref_key(response.subject_ref), response.subject_ref) AS patient_ref,
       coalesce(ref_key(response.encounter_ref), response.encounter_ref) AS encounter_ref,
       response.source_ref, response.author_ref, response.authored_at,
       CASE WHEN ref_type(response.source_ref) IN ('Patient', 'Practitioner', 'PractitionerRole', 'RelatedPerson')
            THEN ref_type(response.source_ref) END AS source_type,
       CASE WHEN ref_type(response.author_ref) IN ('Patient', 'Practitioner', 'PractitionerRole', 'RelatedPerson')
            THEN ref_type(response.author_ref) END AS author_type
FROM staging.questionnaire_responses AS response
LEFT JOIN staging.response_forms AS form
       ON form.source = response.source AND form.questionnaire = coalesce(response.questionnaire, '');
