"""Medication adherence: PDC by the PQA method, and `marts.adherence` (one row per patient x period).

PDC (proportion of days covered, Pharmacy Quality Alliance): over a measurement period, fills
(MedicationDispense with a counted status, `whenHandedOver` date in the period, `daysSupply` > 0)
need at least `pdc_min_fills` distinct fill dates of one drug (ingredient) or one class, by the
declared mapping `marts/reference/medications.yaml` (`medication_map`; an unmapped code is its own
drug in no class, and is counted); the index date is the first fill in the period;
the denominator is the days from the index date to the period end (inclusive). A fill of a drug
that is still covered by an earlier fill of the same drug starts the day after that supply ends
(shifted forward); a day counts once however many drugs cover it; days after the period end do not
count. Adherent when PDC >= `pdc_threshold`.

The shift is set-based: for fills k of one drug in date order with supplies s and S_k the supply of
the fills before k, the adjusted start is `S_k + max_{j<=k}(day_j - S_j)` (a running maximum).
SQL: `marts/sql/pdc.sql` (also used by qi_monthly), `medication_map.sql`, `adherence_periods.sql`,
`adherence.sql`.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import duckdb
import yaml

from pipelines.sqlfiles import count_rows, run_sql

SQL_DIR = Path(__file__).resolve().parent / "sql"
PDC_SQL = SQL_DIR / "pdc.sql"
MEDICATION_MAP_SQL = SQL_DIR / "medication_map.sql"
# The declared medication code -> ingredient and class mapping (its sources are in the file).
MEDICATION_MAP_FILE = Path(__file__).resolve().parent / "reference" / "medications.yaml"


class MedicationMapError(ValueError):
    """The medication mapping file is malformed; the message names the entry."""


@cache
def medication_map(path: Path = MEDICATION_MAP_FILE) -> tuple[tuple[str, str, str, str], ...]:
    """(system, code, ingredient, class) of every code in the mapping file, checked: each row has all
    four, its class is declared under `classes`, and no (system, code) maps twice."""
    doc = yaml.safe_load(path.read_text())
    classes = set((doc.get("classes") or {}).keys())
    rows: dict[tuple[str, str], tuple[str, str, str, str]] = {}
    for entry in doc.get("codes") or []:
        row = tuple(str(entry.get(k) or "") for k in ("system", "code", "ingredient", "class"))
        system, code, ingredient, drug_class = row
        if not all(row):
            raise MedicationMapError(f"{path.name}: entry {entry!r} needs system, code, ingredient and class")
        if drug_class not in classes:
            raise MedicationMapError(f"{path.name}: {system}|{code} names undeclared class {drug_class!r}")
        if (system, code) in rows:
            raise MedicationMapError(f"{path.name}: {system}|{code} is mapped twice")
        rows[(system, code)] = (system, code, ingredient, drug_class)
    return tuple(rows.values())


def install_medication_map(con: duckdb.DuckDBPyConnection, path: Path = MEDICATION_MAP_FILE) -> int:
    """The work table `mart_medication_map` from the mapping file (values bound); returns its rows."""
    rows = medication_map(path)
    run_sql(
        con,
        MEDICATION_MAP_SQL,
        params={
            "systems": [r[0] for r in rows],
            "codes": [r[1] for r in rows],
            "ingredients": [r[2] for r in rows],
            "classes": [r[3] for r in rows],
        },
    )
    return len(rows)


ADHERENCE_PERIODS_SQL = SQL_DIR / "adherence_periods.sql"
ADHERENCE_SQL = SQL_DIR / "adherence.sql"


def compute_pdc(con: duckdb.DuckDBPyConnection, periods: str, target: str) -> None:
    """Create temp table `target` with the PDC of every period in the table `periods`.

    `periods` has (source, patient_id, period_id, period_start, period_end). Both names are the
    callers' own work tables, passed as identifiers (checked and quoted), never data.
    """
    install_medication_map(con)
    run_sql(con, PDC_SQL, identifiers={"periods": periods, "target": target})


def build_adherence(con: duckdb.DuckDBPyConnection) -> int:
    """(Re)build marts.adherence (one row per patient x adherence period); returns its row count."""
    run_sql(con, ADHERENCE_PERIODS_SQL)
    compute_pdc(con, "_adherence_periods", "_adherence_pdc")
    run_sql(con, ADHERENCE_SQL)
    return count_rows(con, "marts.adherence")
