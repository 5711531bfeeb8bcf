"""What the clinical staging SQL (and the marts after it) needs on a connection before it runs.

`prepare_clinical` installs the shared macros (`pipelines/sql/macros.sql`), the clinical macros, the
one-row `mart_params` table with every threshold and setting bound as values, the status tables and
the age-band function. Everything is temporary and per connection, so it is cheap to repeat per step.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb

from marts.privacy import register_age_band
from marts.settings import MartSettings, Thresholds, thresholds_from_registry
from marts.stats import z_for
from pipelines.sqlfiles import install_shared_macros, query_sql, run_sql
from pipelines.warehouse import ensure_raw_schema

SQL_DIR = Path(__file__).resolve().parent.parent / "sql" / "clinical"


def data_reference_date(con: duckdb.DuckDBPyConnection) -> date | None:
    """The latest session, appointment or dispense date in the raw layer (None when there is none)."""
    ensure_raw_schema(con)
    install_shared_macros(con)
    value = query_sql(con, SQL_DIR / "reference_date.sql")[0][0]
    return value if isinstance(value, date) else None


def reference_date(con: duckdb.DuckDBPyConnection, settings: MartSettings) -> date:
    """`settings.reference_date`, else the latest date in the data, else today (an empty warehouse)."""
    if settings.reference_date is not None:
        return settings.reference_date
    return data_reference_date(con) or date.today()


def install_params(
    con: duckdb.DuckDBPyConnection, settings: MartSettings, thresholds: Thresholds, as_of: date
) -> None:
    """The temp tables `mart_params`, `mart_dispense_statuses` and `mart_appointment_statuses`."""
    run_sql(
        con,
        SQL_DIR / "params.sql",
        params={
            **thresholds.as_dict(),
            "as_of_date": as_of,
            "episode_gap_days": settings.episode_gap_days,
            "rupture_srs_rule": settings.rupture_srs_rule,
            "repair_window_sessions": settings.repair_window_sessions,
            "early_sessions": settings.early_sessions,
            "pdc_threshold": settings.pdc_threshold,
            "pdc_min_fills": settings.pdc_min_fills,
            "pdc_index_min_days": settings.pdc_index_min_days,
            "pdc_window_days": settings.pdc_window_days,
            "adherence_period": settings.adherence_period,
            "baseline_window_sessions": settings.baseline_window_sessions,
            "baseline_window_days": settings.baseline_window_days,
            "min_cell": settings.min_cell,
            "ci_level": settings.ci_level,
            # the two-sided normal quantile of ci_level, so SQL intervals need no literal 1.96
            "ci_z": z_for(settings.ci_level),
            "funnel_z_inner": settings.funnel_z[0],
            "funnel_z_outer": settings.funnel_z[1],
            "dispense_statuses": list(settings.dispense_statuses),
            "appointment_attended": list(settings.appointment_attended),
            "appointment_missed": list(settings.appointment_missed),
        },
    )


def prepare_clinical(
    con: duckdb.DuckDBPyConnection, settings: MartSettings, thresholds: Thresholds | None = None
) -> date:
    """Macros, parameters and the age-band function on this connection; returns the reference date.

    Creates the raw schema (so an empty warehouse works) and the staging schema.
    """
    ensure_raw_schema(con)
    con.execute("CREATE SCHEMA IF NOT EXISTS staging")
    install_shared_macros(con)
    as_of = reference_date(con, settings)
    install_params(con, settings, thresholds or thresholds_from_registry(), as_of)
    register_age_band(con, settings.age_bands)
    return as_of
