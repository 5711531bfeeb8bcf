-- staging.excluded_responses: one row per current response whose status keeps it out of scoring.
-- entered-in-error withdraws the newest earlier version that was scoreable (completed or amended):
-- `withdrawn_version` names it when the raw layer landed it (so a score published from it is now
-- withdrawn). When only the entered-in-error version was landed (a first pull after the withdrawal,
-- a server search that returns current versions only), no score of this pipeline is withdrawn:
-- `withdrawn_version` is NULL and `detail` says so, rather than guessing a server version id.

-- Every landed version that could be scored; `current_version` over it is the newest scoreable one.
CREATE OR REPLACE TEMP VIEW scoreable_response_versions AS
SELECT *
FROM raw.questionnaire_response
WHERE resource ->> 'status' IN ('completed', 'amended');

CREATE OR REPLACE TABLE staging.excluded_responses AS
WITH newest_scoreable_versions AS (
    SELECT source, id AS response_id, version_id AS withdrawn_version
    FROM current_version('scoreable_response_versions')
)
SELECT route.source, route.response_id, route.version_id, route.status,
       route.route_reason AS reason,
       CASE WHEN route.status <> 'entered-in-error' THEN route.route_detail
            WHEN scoreable.withdrawn_version IS DISTINCT FROM route.version_id
                 AND scoreable.withdrawn_version IS NOT NULL
                THEN 'the newest version marks the response entered-in-error; it withdraws version '
                     || scoreable.withdrawn_version || ' (completed or amended), landed earlier'
            ELSE 'the newest version marks the response entered-in-error; no earlier completed or amended '
                 || 'version was landed, so no score here is withdrawn'
       END AS detail,
       CASE WHEN route.status = 'entered-in-error'
                 AND scoreable.withdrawn_version IS DISTINCT FROM route.version_id
            THEN scoreable.withdrawn_version END AS withdrawn_version,
       route.instrument, route.patient_ref, route.encounter_ref, route.authored_at
FROM response_routes AS route
LEFT JOIN newest_scoreable_versions AS scoreable USING (source, response_id)
WHERE route.route = 'excluded'
ORDER BY route.source, route.response_id;

DROP VIEW scoreable_response_versions;
