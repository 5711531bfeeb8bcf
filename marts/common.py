"""Shared pieces of the mart builders: SQL macros, current resource versions, the parameter row."""

from __future__ import annotations

from datetime import date

import duckdb
import pandas as pd

from marts.settings import MartSettings, Thresholds
from pipelines.warehouse import table_exists

# A reference's resource type and id: relative (`Patient/1`), absolute (`https://x/fhir/Patient/1`)
# or versioned (`Patient/1/_history/2`). Contained (`#x`) and logical references have neither.
_REF_PATTERN = r"(?:^|/)([A-Za-z]+)/([A-Za-z0-9.\-]{1,64})(?:/_history/[^/]+)?$"

MACROS: tuple[str, ...] = (
    f"""CREATE OR REPLACE TEMP MACRO ref_type(r) AS
        nullif(regexp_extract(r, '{_REF_PATTERN}', 1), '')""",
    f"""CREATE OR REPLACE TEMP MACRO ref_id(r, t) AS
        CASE WHEN regexp_extract(r, '{_REF_PATTERN}', 1) = t
             THEN nullif(regexp_extract(r, '{_REF_PATTERN}', 2), '') END""",
    # The calendar date written in a FHIR date/dateTime/instant (its local date when it has an offset).
    "CREATE OR REPLACE TEMP MACRO fhir_date(s) AS TRY_CAST(left(s, 10) AS DATE)",
    # Age in whole years on day d from a FHIR birthDate (YYYY, YYYY-MM or YYYY-MM-DD).
    """CREATE OR REPLACE TEMP MACRO age_at(b, d) AS CASE
        WHEN TRY_CAST(b AS DATE) IS NOT NULL
            THEN year(d) - year(TRY_CAST(b AS DATE))
                 - CASE WHEN month(d) * 100 + day(d)
                             < month(TRY_CAST(b AS DATE)) * 100 + day(TRY_CAST(b AS DATE))
                        THEN 1 ELSE 0 END
        WHEN regexp_matches(b, '^[0-9]{4}') THEN year(d) - CAST(left(b, 4) AS INTEGER)
        END""",
)


def install_macros(con: duckdb.DuckDBPyConnection) -> None:
    """Create the temporary SQL macros the mart SQL uses (per connection, idempotent)."""
    for stmt in MACROS:
        con.execute(stmt)


def current_versions(table: str) -> str:
    """SQL for the newest landed version of each (source, id) of `raw.<table>`.

    Same ordering as `fhir_mappings.flatten.CURRENT_RESPONSES`: meta.lastUpdated, then a numeric
    versionId, then the version text. A resource whose newest version is a tombstone (deleted at
    the source) is left out. `table` is one of the project's raw table names, never data.
    """
    return f"""
        SELECT source, id, resource
        FROM raw.{table}
        QUALIFY row_number() OVER (
            PARTITION BY source, id
            ORDER BY last_updated DESC NULLS LAST, TRY_CAST(version_id AS BIGINT) DESC NULLS LAST,
                     version_id DESC
        ) = 1 AND deleted IS NOT TRUE
    """  # noqa: S608 - table names are module constants


def relation_exists(con: duckdb.DuckDBPyConnection, schema: str, name: str) -> bool:
    """Does the table or view `schema.name` exist?"""
    return table_exists(con, f"{schema}.{name}")


def data_reference_date(con: duckdb.DuckDBPyConnection) -> date | None:
    """The latest session, appointment or dispense date in the raw layer (None when there is none)."""
    parts = []
    for table, path in (
        ("encounter", "$.period.start"),
        ("appointment", "$.start"),
        ("medication_dispense", "$.whenHandedOver"),
    ):
        if relation_exists(con, "raw", table):
            parts.append(f"SELECT max(fhir_date(resource ->> '{path}')) AS d FROM raw.{table}")  # noqa: S608
    if not parts:
        return None
    install_macros(con)
    row = con.execute(f"SELECT max(d) FROM ({' UNION ALL '.join(parts)})").fetchall()  # noqa: S608
    value = row[0][0]
    return value if isinstance(value, date) else None


def reference_date(con: duckdb.DuckDBPyConnection, settings: MartSettings) -> date:
    """`settings.reference_date`, else the latest date in the data, else today (an empty warehouse)."""
    if settings.reference_date is not None:
        return settings.reference_date
    return data_reference_date(con) or date.today()


def install_params(
    con: duckdb.DuckDBPyConnection, settings: MartSettings, thresholds: Thresholds, as_of: date
) -> None:
    """One-row temp table `mart_params`: every threshold and setting the mart SQL reads.

    The SQL cross-joins it, so values are bound as data (never formatted into SQL text) and the
    same values are copied into the threshold columns beside the rows they shaped.
    """
    row = {
        **thresholds.as_dict(),
        "as_of_date": pd.Timestamp(as_of),
        "episode_gap_days": settings.episode_gap_days,
        "rupture_drop": settings.rupture_drop,
        "rupture_srs_rule": settings.rupture_srs_rule,
        "repair_window_sessions": settings.repair_window_sessions,
        "early_sessions": settings.early_sessions,
        "pdc_threshold": settings.pdc_threshold,
        "pdc_min_fills": settings.pdc_min_fills,
        "pdc_window_days": settings.pdc_window_days,
        "adherence_period": settings.adherence_period,
        "dropout_fewer_than_sessions": settings.dropout_fewer_than_sessions,
        "min_cell": settings.min_cell,
    }
    df = pd.DataFrame([row])
    con.register("_mart_params_df", df)
    try:
        con.execute(
            """CREATE OR REPLACE TEMP TABLE mart_params AS
               SELECT * REPLACE (CAST(as_of_date AS DATE) AS as_of_date,
                                 CAST(rupture_srs_rule AS VARCHAR) AS rupture_srs_rule,
                                 CAST(adherence_period AS VARCHAR) AS adherence_period,
                                 CAST(episode_gap_days AS INTEGER) AS episode_gap_days,
                                 CAST(repair_window_sessions AS INTEGER) AS repair_window_sessions,
                                 CAST(early_sessions AS INTEGER) AS early_sessions,
                                 CAST(pdc_min_fills AS INTEGER) AS pdc_min_fills,
                                 CAST(pdc_window_days AS INTEGER) AS pdc_window_days,
                                 CAST(dropout_fewer_than_sessions AS INTEGER) AS dropout_fewer_than_sessions,
                                 CAST(min_cell AS INTEGER) AS min_cell)
               FROM _mart_params_df"""
        )
    finally:
        con.unregister("_mart_params_df")
    con.execute("CREATE OR REPLACE TEMP TABLE mart_dispense_statuses (status VARCHAR)")
    con.executemany(
        "INSERT INTO mart_dispense_statuses VALUES (?)", [[s] for s in settings.dispense_statuses]
    )
    con.execute("CREATE OR REPLACE TEMP TABLE mart_appointment_statuses (status VARCHAR, kind VARCHAR)")
    con.executemany(
        "INSERT INTO mart_appointment_statuses VALUES (?, ?)",
        [[s, "attended"] for s in settings.appointment_attended]
        + [[s, "missed"] for s in settings.appointment_missed],
    )
