"""The scoring contract clinical staging reads: `staging.measure_scores` and the columns it must have."""

from __future__ import annotations

import duckdb

from fhir_mappings.clinical.params import SQL_DIR
from pipelines.sqlfiles import query_sql

# The columns of staging.measure_scores that session_measures (and so the marts) read.
REQUIRED_SCORE_COLUMNS: tuple[str, ...] = (
    "source",
    "response_id",
    "status",
    "instrument",
    "scale",
    "score",
    "is_valid",
    "rater",
    "authored_at",
    "patient_ref",
    "encounter_ref",
)


class MissingInputError(RuntimeError):
    """An input table the marts need is missing or lacks contract columns."""


def check_score_contract(con: duckdb.DuckDBPyConnection) -> None:
    """Fail clearly when staging.measure_scores is missing or lacks a column the marts read."""
    columns = {str(r[0]) for r in query_sql(con, SQL_DIR / "score_contract_columns.sql")}
    if not columns:
        raise MissingInputError(
            "staging.measure_scores does not exist: materialise the scoring asset (staging/measure_scores) "
            "before the marts"
        )
    missing = [c for c in REQUIRED_SCORE_COLUMNS if c not in columns]
    if missing:
        raise MissingInputError(f"staging.measure_scores lacks contract columns: {', '.join(missing)}")
