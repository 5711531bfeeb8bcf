"""Medication adherence: PDC by the PQA method, and `marts.adherence` (one row per patient x period).

PDC (proportion of days covered, Pharmacy Quality Alliance): over a measurement period, fills
(MedicationDispense with a counted status, `whenHandedOver` date in the period, `daysSupply` > 0)
need at least `pdc_min_fills` distinct fill dates; the index date is the first fill in the period;
the denominator is the days from the index date to the period end (inclusive). A fill of a drug
that is still covered by an earlier fill of the same drug starts the day after that supply ends
(shifted forward); a day counts once however many drugs cover it; days after the period end do not
count. Adherent when PDC >= `pdc_threshold`.

The shift is set-based: for fills k of one drug in date order with supplies s and S_k the supply of
the fills before k, the adjusted start is `S_k + max_{j<=k}(day_j - S_j)` (a running maximum).
SQL: `marts/sql/pdc.sql` (also used by qi_monthly), `adherence_periods.sql`, `adherence.sql`.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from pipelines.sqlfiles import count_rows, run_sql

SQL_DIR = Path(__file__).resolve().parent / "sql"
PDC_SQL = SQL_DIR / "pdc.sql"
ADHERENCE_PERIODS_SQL = SQL_DIR / "adherence_periods.sql"
ADHERENCE_SQL = SQL_DIR / "adherence.sql"


def compute_pdc(con: duckdb.DuckDBPyConnection, periods: str, target: str) -> None:
    """Create temp table `target` with the PDC of every period in the table `periods`.

    `periods` has (source, patient_id, period_id, period_start, period_end). Both names are the
    callers' own work tables, passed as identifiers (checked and quoted), never data.
    """
    run_sql(con, PDC_SQL, identifiers={"periods": periods, "target": target})


def build_adherence(con: duckdb.DuckDBPyConnection) -> int:
    """(Re)build marts.adherence (one row per patient x adherence period); returns its row count."""
    run_sql(con, ADHERENCE_PERIODS_SQL)
    compute_pdc(con, "_adherence_periods", "_adherence_pdc")
    run_sql(con, ADHERENCE_SQL)
    return count_rows(con, "marts.adherence")
