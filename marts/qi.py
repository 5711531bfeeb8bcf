"""`marts.qi_monthly`: one row per clinic x month, plus one practice-wide row per month.

Every count is attributed to exactly one clinic row, so the practice row is the sum of the month's
clinic rows (sessions: the session's clinic; patients the clinic of their last session in the month;
episodes their episode's clinic, in the month they ended; appointments their episode's clinic;
questionnaire responses their session's clinic). Sessions with no known clinic form a row with a NULL
clinic_key. Small cells (1 to min_cell - 1) are suppressed with complementary suppression across
each row's nested counts and across the clinics of each month (marts.suppression).

Outcome rates rest on the few episodes that end in a month, so the practice rows also carry calendar-
quarter outcome counts and rates (`quarter_*`), on the row of the quarter's last month in the data
(one cell per quarter: overlapping rolling windows would give a hidden month away by differencing two
windows, which cell suppression cannot block). A quarter count is the sum of its practice months and is
suppressed with them; the quarters of a year (and of the whole span) add up to its period total.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable
from datetime import date
from pathlib import Path
from typing import Any

import duckdb

from marts.adherence import compute_pdc
from marts.frames import query_dicts, write_table
from marts.outcomes import PLACED_APPOINTMENTS_SQL
from marts.settings import MartSettings
from marts.suppression import Relation, apply_rates, is_small, suppress
from pipelines.sqlfiles import run_sql
from pipelines.warehouse import table_exists

COLUMNS: list[tuple[str, str]] = [
    ("level", "VARCHAR"),
    ("clinic_key", "VARCHAR"),
    ("month", "DATE"),
    ("patients_seen", "INTEGER"),
    ("sessions_attended", "INTEGER"),
    ("sessions_alliance_measured", "INTEGER"),
    ("measurement_completion_rate", "DOUBLE"),
    ("sessions_wai_measured", "INTEGER"),
    ("mean_alliance", "DOUBLE"),
    ("sessions_low_alliance", "INTEGER"),
    ("low_alliance_share", "DOUBLE"),
    ("sessions_srs_measured", "INTEGER"),
    ("mean_srs", "DOUBLE"),
    ("sessions_clinician_measured", "INTEGER"),
    ("mean_alliance_clinician", "DOUBLE"),
    ("ruptures", "INTEGER"),
    ("rupture_rate", "DOUBLE"),
    ("episodes_ended", "INTEGER"),
    ("episodes_outcome_complete", "INTEGER"),
    ("episodes_case_complete", "INTEGER"),
    ("episodes_recovered", "INTEGER"),
    ("recovery_rate", "DOUBLE"),
    ("episodes_reliably_improved", "INTEGER"),
    ("reliable_improvement_rate", "DOUBLE"),
    ("patients_pdc_measured", "INTEGER"),
    ("patients_pdc_adherent", "INTEGER"),
    ("pdc_adherence_rate", "DOUBLE"),
    ("appointments_booked", "INTEGER"),
    ("appointments_attended", "INTEGER"),
    ("attendance_rate", "DOUBLE"),
    ("dq_responses", "INTEGER"),
    ("dq_passed", "INTEGER"),
    ("data_quality_pass_rate", "DOUBLE"),
    ("suppressed_columns", "VARCHAR"),
    ("low_alliance_threshold", "DOUBLE"),
    ("pdc_threshold", "DOUBLE"),
    ("pdc_window_days", "INTEGER"),
    ("min_cell", "INTEGER"),
    # appended: calendar-quarter outcome counts and rates on the practice row of the quarter's last month
    ("quarter_start", "DATE"),
    ("quarter_episodes_outcome_complete", "INTEGER"),
    ("quarter_episodes_case_complete", "INTEGER"),
    ("quarter_episodes_recovered", "INTEGER"),
    ("quarter_recovery_rate", "DOUBLE"),
    ("quarter_episodes_reliably_improved", "INTEGER"),
    ("quarter_reliable_improvement_rate", "DOUBLE"),
]
# quarter column -> the monthly column it sums over the quarter's practice months
QUARTER_SOURCES: dict[str, str] = {
    "quarter_episodes_outcome_complete": "episodes_outcome_complete",
    "quarter_episodes_case_complete": "episodes_case_complete",
    "quarter_episodes_recovered": "episodes_recovered",
    "quarter_episodes_reliably_improved": "episodes_reliably_improved",
}
QUARTER_RATES: dict[str, tuple[str, str]] = {
    "quarter_recovery_rate": ("quarter_episodes_recovered", "quarter_episodes_case_complete"),
    "quarter_reliable_improvement_rate": (
        "quarter_episodes_reliably_improved",
        "quarter_episodes_outcome_complete",
    ),
}
QUARTER_ROW_RELATIONS: tuple[tuple[str, str], ...] = (
    ("quarter_episodes_outcome_complete", "quarter_episodes_case_complete"),
    ("quarter_episodes_outcome_complete", "quarter_episodes_reliably_improved"),
    ("quarter_episodes_case_complete", "quarter_episodes_recovered"),
)

COUNT_COLUMNS: tuple[str, ...] = tuple(
    c
    for c, t in COLUMNS
    if t == "INTEGER" and c not in ("pdc_window_days", "min_cell") and c not in QUARTER_SOURCES
)
ROW_RELATIONS: tuple[tuple[str, str], ...] = (
    ("sessions_attended", "sessions_alliance_measured"),
    ("sessions_alliance_measured", "sessions_wai_measured"),
    ("sessions_alliance_measured", "sessions_srs_measured"),
    ("sessions_alliance_measured", "ruptures"),
    ("sessions_attended", "sessions_clinician_measured"),
    ("sessions_wai_measured", "sessions_low_alliance"),
    ("episodes_ended", "episodes_outcome_complete"),
    ("episodes_outcome_complete", "episodes_case_complete"),
    ("episodes_outcome_complete", "episodes_reliably_improved"),
    ("episodes_case_complete", "episodes_recovered"),
    ("patients_seen", "patients_pdc_measured"),
    ("patients_pdc_measured", "patients_pdc_adherent"),
    ("appointments_booked", "appointments_attended"),
    ("dq_responses", "dq_passed"),
)
RATES: dict[str, tuple[str, str]] = {
    "measurement_completion_rate": ("sessions_alliance_measured", "sessions_attended"),
    "low_alliance_share": ("sessions_low_alliance", "sessions_wai_measured"),
    "rupture_rate": ("ruptures", "sessions_alliance_measured"),
    "recovery_rate": ("episodes_recovered", "episodes_case_complete"),
    "reliable_improvement_rate": ("episodes_reliably_improved", "episodes_outcome_complete"),
    "pdc_adherence_rate": ("patients_pdc_adherent", "patients_pdc_measured"),
    "attendance_rate": ("appointments_attended", "appointments_booked"),
    "data_quality_pass_rate": ("dq_passed", "dq_responses"),
}
# Counts whose sum over a period's months also follows from marts.therapist_alliance (the sum of its
# therapists' rows of that period): a period total a reader may know, so one hidden month in it would
# follow by subtraction. Fixed totals per period type therapist_alliance publishes.
PERIOD_LINKED: tuple[str, ...] = (
    "sessions_wai_measured",
    "episodes_ended",
    "episodes_outcome_complete",
    "episodes_case_complete",
    "episodes_recovered",
    "episodes_reliably_improved",
)
MEANS: dict[str, str] = {
    "mean_alliance": "sessions_wai_measured",
    "mean_srs": "sessions_srs_measured",
    "mean_alliance_clinician": "sessions_clinician_measured",
}

SQL_DIR = Path(__file__).resolve().parent / "sql"
PATIENT_MONTHS_SQL = SQL_DIR / "qi_patient_months.sql"
# Completed responses: from the flattened responses when they exist, else from the scores.
RESPONSES_FLATTENED_SQL = SQL_DIR / "qi_responses_flattened.sql"
RESPONSES_SCORED_SQL = SQL_DIR / "qi_responses_scored.sql"
# Quarantined responses: from the newest quality checks, or none before the checks first run.
QUARANTINED_SQL = SQL_DIR / "qi_quarantined.sql"
QUARANTINED_NONE_SQL = SQL_DIR / "qi_quarantined_none.sql"
DATA_QUALITY_SQL = SQL_DIR / "qi_data_quality.sql"
QI_COUNTS_SQL = SQL_DIR / "qi_monthly.sql"


def _data_quality(con: duckdb.DuckDBPyConnection) -> None:
    """The work table `_qi_dq`: each completed response at a session, passed or not."""
    flattened = table_exists(con, "staging.questionnaire_responses")
    run_sql(con, RESPONSES_FLATTENED_SQL if flattened else RESPONSES_SCORED_SQL)
    checked = table_exists(con, "quality.current_quarantine")
    run_sql(con, QUARANTINED_SQL if checked else QUARANTINED_NONE_SQL)
    run_sql(con, DATA_QUALITY_SQL)


def qi_rows(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """The unsuppressed clinic x month and practice x month rows (needs the upstream marts)."""
    run_sql(con, PLACED_APPOINTMENTS_SQL)
    run_sql(con, PATIENT_MONTHS_SQL)
    compute_pdc(con, "_qi_patient_months", "_qi_pdc")
    _data_quality(con)
    rows = query_dicts(con, QI_COUNTS_SQL)
    for row in rows:
        for col in COUNT_COLUMNS:
            row[col] = int(row.get(col) or 0)
        for rate, (num, den) in RATES.items():
            row[rate] = row[num] / row[den] if row[den] else None
    add_quarters(rows)
    return rows


def _quarter_of(month: Any) -> tuple[int, int]:
    return month.year, (month.month - 1) // 3


def quarter_members(rows: list[dict[str, Any]]) -> dict[int, list[int]]:
    """Practice rows by quarter: the index of the quarter's last month in the data -> all its months."""
    by_quarter: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        # a month that is not a date (hand-built rows) has no quarter
        if row.get("level") == "practice" and hasattr(row.get("month"), "year"):
            by_quarter[_quarter_of(row["month"])].append(i)
    return {max(members, key=lambda i: rows[i]["month"]): members for members in by_quarter.values()}


def add_quarters(rows: list[dict[str, Any]]) -> None:
    """Fill the quarter columns on the practice row of each quarter's last month (sums of the
    quarter's practice months, and their rates); NULL on every other row. In place."""
    for row in rows:
        for col in (*QUARTER_SOURCES, *QUARTER_RATES, "quarter_start"):
            row[col] = None
    for last, members in quarter_members(rows).items():
        row = rows[last]
        year, q = _quarter_of(row["month"])
        row["quarter_start"] = date(year, 3 * q + 1, 1)
        for col, source in QUARTER_SOURCES.items():
            row[col] = sum(int(rows[i].get(source) or 0) for i in members)
        for rate, (num, den) in QUARTER_RATES.items():
            row[rate] = row[num] / row[den] if row[den] else None


def suppress_qi_rows(
    rows: list[dict[str, Any]], min_cell: int, linked_periods: Iterable[str] = ("all", "year")
) -> None:
    """Primary and complementary suppression within rows, across each month's clinics and across the
    practice months of each period therapist_alliance publishes (`linked_periods`: its sums of
    therapists give those totals away, so they are fixed here); blanks
    rates whose numerator or denominator is suppressed and means over a small count. In place."""
    values: dict[tuple[Hashable, str], int | None] = {}
    relations: list[Relation] = []
    by_month: dict[Any, dict[str, list[int]]] = defaultdict(lambda: {"practice": [], "clinic": []})
    for i, row in enumerate(rows):
        for col in COUNT_COLUMNS:
            values[(i, col)] = row.get(col)
        for total, part in ROW_RELATIONS:
            relations.append(Relation((i, total), ((i, part),), hidden_remainder=True))
        by_month[row["month"]][row["level"]].append(i)
    for groups in by_month.values():
        for p in groups["practice"]:
            for col in COUNT_COLUMNS:
                relations.append(Relation((p, col), tuple((c, col) for c in groups["clinic"])))
    fixed: list[tuple[Hashable, str]] = []
    periods: dict[Hashable, list[int]] = defaultdict(list)
    for month, groups in by_month.items():
        # the period types therapist_alliance publishes (settings.therapist_periods); a month is
        # its own period and needs no relation (a small month total makes every part small)
        kinds = set(linked_periods)
        year = getattr(month, "year", None)
        if "all" in kinds:
            periods[("all",)] += groups["practice"]
        if "year" in kinds and year is not None:
            periods[("year", year)] += groups["practice"]
        if "quarter" in kinds and year is not None:
            periods[("quarter", year, (month.month - 1) // 3)] += groups["practice"]
    for period, members in periods.items():
        for col in PERIOD_LINKED:
            period_total: tuple[Hashable, str] = (("period", period), col)
            values[period_total] = sum(int(rows[i].get(col) or 0) for i in members)
            fixed.append(period_total)
            relations.append(Relation(period_total, tuple((i, col) for i in members)))
    # the quarter cells: each the sum of its practice months, nested like the monthly counts, and the
    # quarters inside a period adding up to the period's (fixed) total
    quarters = quarter_members(rows)
    for last, members in quarters.items():
        for col, source in QUARTER_SOURCES.items():
            values[(last, col)] = rows[last].get(col)
            relations.append(Relation((last, col), tuple((i, source) for i in members)))
        for total, part in QUARTER_ROW_RELATIONS:
            relations.append(Relation((last, total), ((last, part),), hidden_remainder=True))
    for period, members in periods.items():
        inside = [last for last in quarters if last in members]
        for col, source in QUARTER_SOURCES.items():
            if source in PERIOD_LINKED:
                relations.append(Relation((("period", period), source), tuple((q, col) for q in inside)))
    result = suppress(values, relations, min_cell, fixed=fixed)
    blanked = (
        result.suppressed
        | apply_rates(result.suppressed, RATES, range(len(rows)))
        | apply_rates(result.suppressed, QUARTER_RATES, quarters)
    )
    for i, row in enumerate(rows):
        gone = [
            col for col in (*COUNT_COLUMNS, *RATES, *QUARTER_SOURCES, *QUARTER_RATES) if (i, col) in blanked
        ]
        for mean, n_col in MEANS.items():
            if is_small(row.get(n_col), min_cell):
                gone.append(mean)
        for col in gone:
            row[col] = None
        row["suppressed_columns"] = ",".join(sorted(gone)) or None


def build_qi_monthly(con: duckdb.DuckDBPyConnection, settings: MartSettings) -> int:
    """(Re)build marts.qi_monthly (needs alliance_sessions and episode_outcomes)."""
    rows = qi_rows(con)
    suppress_qi_rows(rows, settings.min_cell, settings.therapist_periods)
    return write_table(con, "marts.qi_monthly", COLUMNS, rows)
