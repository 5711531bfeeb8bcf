"""Clinical staging: one set-based DuckDB query per FHIR resource type, over the newest version of each
(source, id) in the raw layer, plus the derived sessions and treatment episodes.

No names, telecoms, identifiers or free text are carried; patients keep a birth year and an age band
(the exact birth date stays in the raw layer). Every table is rebuilt whole (CREATE OR REPLACE), so a
rerun gives the same rows.
"""

from __future__ import annotations

from collections.abc import Callable

import duckdb

from marts.common import current_versions, install_macros, install_params, reference_date
from marts.privacy import register_age_band
from marts.settings import MartSettings, Thresholds, thresholds_from_registry

# Resolve a Practitioner or PractitionerRole reference to a Practitioner id (roles via staging).
_PRACTITIONER_OF = """
    coalesce(ref_id({ref}, 'Practitioner'),
             (SELECT pr.practitioner_id FROM staging.practitioner_roles pr
              WHERE pr.source = {src} AND pr.role_id = ref_id({ref}, 'PractitionerRole')))
"""


def _practitioner_of(ref: str, src: str) -> str:
    return _PRACTITIONER_OF.format(ref=ref, src=src)


SQL: dict[str, str] = {
    "practitioners": f"""
        CREATE OR REPLACE TABLE staging.practitioners AS
        SELECT source, id AS practitioner_id,
               TRY_CAST(resource ->> 'active' AS BOOLEAN) AS active,
               resource ->> 'gender' AS gender
        FROM ({current_versions("practitioner")})
        ORDER BY source, practitioner_id
    """,  # noqa: S608 - constants only
    "practitioner_roles": f"""
        CREATE OR REPLACE TABLE staging.practitioner_roles AS
        SELECT source, id AS role_id,
               ref_id(resource -> 'practitioner' ->> 'reference', 'Practitioner') AS practitioner_id,
               ref_id(resource -> 'organization' ->> 'reference', 'Organization') AS organization_id,
               TRY_CAST(resource ->> 'active' AS BOOLEAN) AS active,
               (resource ->> '$.code[*].coding[*].code')[1] AS role_code
        FROM ({current_versions("practitioner_role")})
        ORDER BY source, role_id
    """,  # noqa: S608 - constants only
    "patients": f"""
        CREATE OR REPLACE TABLE staging.patients AS
        WITH p AS (
            SELECT source, id, resource ->> 'birthDate' AS birth, resource
            FROM ({current_versions("patient")})
        )
        SELECT p.source, p.id AS patient_id,
               p.resource ->> 'gender' AS gender,
               TRY_CAST(left(p.birth, 4) AS INTEGER) AS birth_year,
               m.as_of_date AS reference_date,
               age_at(p.birth, m.as_of_date) AS age_years,
               age_band(age_at(p.birth, m.as_of_date)) AS age_band,
               ref_id(p.resource -> 'managingOrganization' ->> 'reference', 'Organization')
                   AS managing_organization_id,
               TRY_CAST(p.resource ->> 'active' AS BOOLEAN) AS active,
               coalesce(TRY_CAST(p.resource ->> 'deceasedBoolean' AS BOOLEAN), FALSE)
                   OR p.resource ->> 'deceasedDateTime' IS NOT NULL AS deceased
        FROM p CROSS JOIN mart_params m
        ORDER BY p.source, patient_id
    """,  # noqa: S608 - constants only
    "encounters": f"""
        CREATE OR REPLACE TABLE staging.encounters AS
        WITH e AS (
            SELECT source, id, resource,
                   CAST(resource -> '$.participant' AS JSON[]) AS parts
            FROM ({current_versions("encounter")})
        ),
        picked AS (
            SELECT *,
                   -- the primary performer when one is marked, else the first practitioner participant
                   coalesce(
                       list_filter(parts, lambda p: list_contains(p ->> '$.type[*].coding[*].code', 'PPRF')
                                   AND ref_type(p ->> '$.individual.reference')
                                       IN ('Practitioner', 'PractitionerRole'))[1],
                       list_filter(parts, lambda p: ref_type(p ->> '$.individual.reference')
                                   IN ('Practitioner', 'PractitionerRole'))[1]
                   ) ->> '$.individual.reference' AS practitioner_ref
            FROM e
        )
        SELECT source, id AS encounter_id,
               resource ->> 'status' AS status,
               resource -> 'class' ->> 'code' AS class_code,
               ref_id(resource -> 'subject' ->> 'reference', 'Patient') AS patient_id,
               ref_id((resource ->> '$.episodeOfCare[*].reference')[1], 'EpisodeOfCare')
                   AS episode_of_care_id,
               {_practitioner_of("practitioner_ref", "picked.source")} AS practitioner_id,
               ref_id(resource -> 'serviceProvider' ->> 'reference', 'Organization') AS clinic_id,
               TRY_CAST(resource -> 'period' ->> 'start' AS TIMESTAMPTZ) AS period_start,
               TRY_CAST(resource -> 'period' ->> 'end' AS TIMESTAMPTZ) AS period_end,
               fhir_date(resource -> 'period' ->> 'start') AS start_date,
               ref_id((resource ->> '$.appointment[*].reference')[1], 'Appointment') AS appointment_id
        FROM picked
        ORDER BY source, encounter_id
    """,  # noqa: S608 - constants only
    "episodes": f"""
        CREATE OR REPLACE TABLE staging.episodes AS
        SELECT source, id AS episode_id,
               ref_id(resource -> 'patient' ->> 'reference', 'Patient') AS patient_id,
               resource ->> 'status' AS status,
               fhir_date(resource -> 'period' ->> 'start') AS period_start,
               fhir_date(resource -> 'period' ->> 'end') AS period_end,
               {_practitioner_of("resource -> 'careManager' ->> 'reference'", "ep.source")}
                   AS care_manager_id,
               ref_id(resource -> 'managingOrganization' ->> 'reference', 'Organization')
                   AS managing_organization_id
        FROM ({current_versions("episode_of_care")}) ep
        ORDER BY source, episode_id
    """,  # noqa: S608 - constants only
    "appointments": f"""
        CREATE OR REPLACE TABLE staging.appointments AS
        WITH a AS (
            SELECT source, id, resource,
                   resource ->> '$.participant[*].actor.reference' AS actors
            FROM ({current_versions("appointment")})
        )
        SELECT source, id AS appointment_id,
               ref_id(list_filter(actors, lambda r: ref_type(r) = 'Patient')[1], 'Patient') AS patient_id,
               {
        _practitioner_of(
            "list_filter(actors, lambda r: ref_type(r) IN ('Practitioner', 'PractitionerRole'))[1]",
            "a.source",
        )
    } AS practitioner_id,
               resource ->> 'status' AS status,
               TRY_CAST(resource ->> 'start' AS TIMESTAMPTZ) AS start_at,
               fhir_date(resource ->> 'start') AS start_date
        FROM a
        ORDER BY source, appointment_id
    """,  # noqa: S608 - constants only
    "dispenses": f"""
        CREATE OR REPLACE TABLE staging.dispenses AS
        WITH d AS (
            SELECT source, id, resource,
                   resource -> 'medicationCodeableConcept' AS med,
                   TRY_CAST(resource -> 'daysSupply' ->> 'value' AS DOUBLE) AS supply,
                   coalesce(resource -> 'daysSupply' ->> 'code', resource -> 'daysSupply' ->> 'unit') AS unit
            FROM ({current_versions("medication_dispense")})
        )
        SELECT source, id AS dispense_id,
               ref_id(resource -> 'subject' ->> 'reference', 'Patient') AS patient_id,
               resource ->> 'status' AS status,
               (med ->> '$.coding[*].system')[1] AS medication_system,
               (med ->> '$.coding[*].code')[1] AS medication_code,
               coalesce((med ->> '$.coding[*].display')[1], med ->> 'text') AS medication_display,
               -- what "the same drug" means for PDC: the code, else the text, else the referenced Medication
               coalesce((med ->> '$.coding[*].code')[1], med ->> 'text',
                        resource -> 'medicationReference' ->> 'reference') AS medication_key,
               TRY_CAST(resource ->> 'whenHandedOver' AS TIMESTAMPTZ) AS when_handed_over,
               fhir_date(resource ->> 'whenHandedOver') AS handed_over_date,
               CAST(round(CASE WHEN unit IN ('wk', 'week', 'weeks') THEN supply * 7
                               WHEN unit IN ('mo', 'month', 'months') THEN supply * 30
                               ELSE supply END) AS INTEGER) AS days_supply,
               TRY_CAST(resource -> 'quantity' ->> 'value' AS DOUBLE) AS quantity,
               ref_id((resource ->> '$.authorizingPrescription[*].reference')[1], 'MedicationRequest')
                   AS medication_request_id
        FROM d
        ORDER BY source, dispense_id
    """,  # noqa: S608 - constants only
    "medication_requests": f"""
        CREATE OR REPLACE TABLE staging.medication_requests AS
        WITH m AS (
            SELECT source, id, resource, resource -> 'medicationCodeableConcept' AS med
            FROM ({current_versions("medication_request")})
        )
        SELECT m.source, id AS medication_request_id,
               ref_id(resource -> 'subject' ->> 'reference', 'Patient') AS patient_id,
               resource ->> 'status' AS status,
               resource ->> 'intent' AS intent,
               (med ->> '$.coding[*].code')[1] AS medication_code,
               coalesce((med ->> '$.coding[*].display')[1], med ->> 'text') AS medication_display,
               coalesce((med ->> '$.coding[*].code')[1], med ->> 'text',
                        resource -> 'medicationReference' ->> 'reference') AS medication_key,
               fhir_date(resource ->> 'authoredOn') AS authored_on,
               {_practitioner_of("resource -> 'requester' ->> 'reference'", "m.source")} AS requester_id,
               TRY_CAST(resource -> 'dispenseRequest' -> 'expectedSupplyDuration' ->> 'value' AS DOUBLE)
                   AS expected_supply_days
        FROM m
        ORDER BY m.source, medication_request_id
    """,  # noqa: S608 - constants only
    # Sessions: attended (finished) Encounters, numbered within their treatment episode. The
    # episode is the Encounter's EpisodeOfCare when it names one; otherwise a gap rule per patient
    # starts a new episode after more than `episode_gap_days` without a session.
    "sessions": """
        CREATE OR REPLACE TABLE staging.sessions AS
        WITH enc AS (
            SELECT * FROM staging.encounters
            WHERE status = 'finished' AND patient_id IS NOT NULL AND start_date IS NOT NULL
        ),
        gap AS (
            SELECT e.*,
                   CASE WHEN lag(start_date) OVER w IS NULL
                             OR start_date - lag(start_date) OVER w > m.episode_gap_days
                        THEN 1 ELSE 0 END AS new_episode
            FROM enc e CROSS JOIN mart_params m
            WHERE e.episode_of_care_id IS NULL
            WINDOW w AS (PARTITION BY e.source, e.patient_id ORDER BY e.period_start, e.encounter_id)
        ),
        gap_numbered AS (
            SELECT *, sum(new_episode) OVER (
                       PARTITION BY source, patient_id ORDER BY period_start, encounter_id
                       ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS episode_no
            FROM gap
        ),
        gap_episodes AS (
            SELECT * EXCLUDE (new_episode, episode_no),
                   'gap:' || patient_id || ':'
                       || strftime(min(start_date) OVER (PARTITION BY source, patient_id, episode_no),
                                   '%Y-%m-%d')
                       AS episode_id,
                   'gap_rule' AS episode_basis
            FROM gap_numbered
        ),
        all_sessions AS (
            SELECT *, episode_of_care_id AS episode_id, 'episode_of_care' AS episode_basis
            FROM enc WHERE episode_of_care_id IS NOT NULL
            UNION ALL BY NAME
            SELECT * FROM gap_episodes
        )
        SELECT s.source, s.encounter_id, s.patient_id, s.episode_id, s.episode_basis,
               row_number() OVER (PARTITION BY s.source, s.episode_id ORDER BY s.period_start, s.encounter_id)
                   AS session_number,
               s.start_date AS session_date,
               s.period_start AS session_start,
               s.practitioner_id,
               coalesce(s.clinic_id, ep.managing_organization_id) AS clinic_id,
               s.appointment_id
        FROM all_sessions s
        LEFT JOIN staging.episodes ep ON ep.source = s.source AND ep.episode_id = s.episode_of_care_id
        ORDER BY s.source, s.episode_id, session_number
    """,
    # One row per treatment episode: every EpisodeOfCare (also those without sessions yet), and
    # every gap-rule episode. Entered-in-error episodes are left out.
    "treatment_episodes": f"""
        CREATE OR REPLACE TABLE staging.treatment_episodes AS
        WITH top_practitioner AS (  -- the episode's most frequent session practitioner (ties: the latest)
            SELECT source, episode_id, practitioner_id
            FROM (SELECT source, episode_id, practitioner_id, count(*) AS n, max(session_number) AS last_seen
                  FROM staging.sessions WHERE practitioner_id IS NOT NULL GROUP BY ALL)
            QUALIFY row_number() OVER (PARTITION BY source, episode_id ORDER BY n DESC, last_seen DESC) = 1
        ),
        top_clinic AS (
            SELECT source, episode_id, clinic_id
            FROM (SELECT source, episode_id, clinic_id, count(*) AS n, max(session_number) AS last_seen
                  FROM staging.sessions WHERE clinic_id IS NOT NULL GROUP BY ALL)
            QUALIFY row_number() OVER (PARTITION BY source, episode_id ORDER BY n DESC, last_seen DESC) = 1
        ),
        agg AS (
            SELECT s.source, s.episode_id, any_value(s.episode_basis) AS episode_basis,
                   any_value(s.patient_id) AS patient_id,
                   count(*) AS sessions_attended,
                   min(s.session_date) AS first_session_date, max(s.session_date) AS last_session_date,
                   any_value(tp.practitioner_id) AS session_practitioner_id,
                   any_value(tc.clinic_id) AS session_clinic_id
            FROM staging.sessions s
            LEFT JOIN top_practitioner tp USING (source, episode_id)
            LEFT JOIN top_clinic tc USING (source, episode_id)
            GROUP BY s.source, s.episode_id
        ),
        eoc AS (
            SELECT ep.source, ep.episode_id, 'episode_of_care' AS episode_basis,
                   coalesce(ep.patient_id, a.patient_id) AS patient_id, ep.status,
                   coalesce(ep.period_start, a.first_session_date) AS period_start,
                   ep.period_end,
                   ep.status IN ('finished', 'cancelled') AS closed,
                   coalesce(a.session_practitioner_id, ep.care_manager_id) AS practitioner_id,
                   coalesce(ep.managing_organization_id, a.session_clinic_id) AS clinic_id,
                   coalesce(a.sessions_attended, 0) AS sessions_attended,
                   a.first_session_date, a.last_session_date
            FROM staging.episodes ep
            LEFT JOIN agg a ON a.source = ep.source AND a.episode_id = ep.episode_id
            WHERE ep.status IS DISTINCT FROM 'entered-in-error'
        ),
        orphan AS (  -- sessions naming an EpisodeOfCare the raw layer does not hold (e.g. rejected)
            SELECT a.source, a.episode_id, a.episode_basis, a.patient_id, NULL AS status,
                   a.first_session_date AS period_start, NULL::DATE AS period_end, NULL::BOOLEAN AS closed,
                   a.session_practitioner_id AS practitioner_id, a.session_clinic_id AS clinic_id,
                   a.sessions_attended, a.first_session_date, a.last_session_date
            FROM agg a
            WHERE a.episode_basis = 'episode_of_care'
              AND NOT EXISTS (SELECT 1 FROM staging.episodes ep
                              WHERE ep.source = a.source AND ep.episode_id = a.episode_id)
        ),
        gap AS (
            SELECT a.source, a.episode_id, a.episode_basis, a.patient_id, NULL AS status,
                   a.first_session_date AS period_start,
                   CASE WHEN m.as_of_date - a.last_session_date > m.episode_gap_days
                        THEN a.last_session_date END AS period_end,
                   m.as_of_date - a.last_session_date > m.episode_gap_days AS closed,
                   a.session_practitioner_id AS practitioner_id, a.session_clinic_id AS clinic_id,
                   a.sessions_attended, a.first_session_date, a.last_session_date
            FROM agg a CROSS JOIN mart_params m
            WHERE a.episode_basis = 'gap_rule'
        ),
        episodes AS (
            SELECT * FROM eoc UNION ALL BY NAME SELECT * FROM orphan UNION ALL BY NAME SELECT * FROM gap
        ),
        raw_birth AS (
            SELECT source, id AS patient_id, resource ->> 'birthDate' AS birth
            FROM ({current_versions("patient")})
        )
        SELECT e.source, e.episode_id, e.episode_basis, e.patient_id, e.status, e.closed,
               e.period_start, e.period_end, e.practitioner_id, e.clinic_id,
               e.sessions_attended::INTEGER AS sessions_attended, e.first_session_date, e.last_session_date,
               age_band(age_at(b.birth, e.period_start)) AS age_band_at_start
        FROM episodes e
        LEFT JOIN raw_birth b ON b.source = e.source AND b.patient_id = e.patient_id
        ORDER BY e.source, e.episode_id
    """,  # noqa: S608 - constants only
}

# Build order: roles before the tables that resolve PractitionerRole references through them.
STAGING_TABLES: tuple[str, ...] = (
    "practitioners",
    "practitioner_roles",
    "patients",
    "encounters",
    "episodes",
    "appointments",
    "dispenses",
    "medication_requests",
    "sessions",
    "treatment_episodes",
)

# Raw tables each staging table reads (for asset dependencies).
RAW_INPUTS: dict[str, tuple[str, ...]] = {
    "practitioners": ("practitioner",),
    "practitioner_roles": ("practitioner_role",),
    "patients": ("patient", "encounter", "appointment", "medication_dispense"),
    "encounters": ("encounter",),
    "episodes": ("episode_of_care",),
    "appointments": ("appointment",),
    "dispenses": ("medication_dispense",),
    "medication_requests": ("medication_request",),
    "sessions": (),
    "treatment_episodes": ("patient",),
}
# Staging tables each staging table reads.
STAGING_INPUTS: dict[str, tuple[str, ...]] = {
    "practitioners": (),
    "practitioner_roles": (),
    "patients": (),
    "encounters": ("practitioner_roles",),
    "episodes": ("practitioner_roles",),
    "appointments": ("practitioner_roles",),
    "dispenses": (),
    "medication_requests": ("practitioner_roles",),
    "sessions": ("encounters", "episodes"),
    "treatment_episodes": ("sessions", "episodes"),
}


def prepare(
    con: duckdb.DuckDBPyConnection, settings: MartSettings, thresholds: Thresholds | None = None
) -> None:
    """Install the macros, the parameter row and the age-band function on this connection."""
    from pipelines.warehouse import ensure_raw_schema  # the raw DDL, so an empty warehouse works

    ensure_raw_schema(con)
    con.execute("CREATE SCHEMA IF NOT EXISTS staging")
    install_macros(con)
    install_params(con, settings, thresholds or thresholds_from_registry(), reference_date(con, settings))
    register_age_band(con, settings.age_bands)


def build_staging_table(con: duckdb.DuckDBPyConnection, name: str) -> int:
    """(Re)build one staging table (after `prepare`); returns its row count."""
    if name not in SQL:
        raise KeyError(f"unknown staging table {name!r}; known: {', '.join(STAGING_TABLES)}")
    con.execute(SQL[name])
    return int(con.execute(f"SELECT count(*) FROM staging.{name}").fetchall()[0][0])  # noqa: S608


def build_clinical_staging(
    con: duckdb.DuckDBPyConnection,
    settings: MartSettings,
    thresholds: Thresholds | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> dict[str, int]:
    """Build every clinical staging table in dependency order; returns row counts."""
    prepare(con, settings, thresholds)
    counts: dict[str, int] = {}
    for name in STAGING_TABLES:
        counts[name] = build_staging_table(con, name)
        if progress:
            progress(name, counts[name])
    return counts
