"""The marts the QI report reads (`marts.report_*`): every aggregate the report shows, suppressed here.

Each mart's SQL is one `CREATE OR REPLACE TABLE marts.<name> AS ...` statement in
`marts/sql/<name>.sql` that reads other marts and the `mart_params` row. Marts that only need SQL are
built by `build_sql_mart`; the others have a `build_<name>(con, settings) -> int` function here that
runs the SQL and then applies small-cell suppression with complements (`marts.suppression`), so the
report never computes or withholds a number itself: it selects rows and formats them.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import duckdb

from marts.frames import write_table
from marts.settings import MartSettings
from marts.suppression import Relation, apply_rates, is_small, suppress
from pipelines.sqlfiles import count_rows, run_sql
from quality_checks.summary import summary_frame

SQL_DIR = Path(__file__).resolve().parent / "sql"

Row = dict[str, Any]


def build_sql_mart(con: duckdb.DuckDBPyConnection, name: str) -> int:
    """Run `marts/sql/<name>.sql` (needs `mart_params` and its input marts); returns the row count."""
    run_sql(con, SQL_DIR / f"{name}.sql")
    return count_rows(con, f"marts.{name}")


def _read(con: duckdb.DuckDBPyConnection, name: str) -> tuple[list[tuple[str, str]], list[Row]]:
    """The columns (name, DuckDB type) and rows of `marts.<name>`, through the relation API."""
    rel = con.table(f"marts.{name}")
    columns = [(c, str(t)) for c, t in zip(rel.columns, rel.types, strict=True)]
    rows = [dict(zip(rel.columns, r, strict=True)) for r in rel.fetchall()]
    return columns, rows


def _rewrite(
    con: duckdb.DuckDBPyConnection, name: str, columns: Sequence[tuple[str, str]], rows: list[Row]
) -> int:
    """Replace `marts.<name>` with `rows` in the same columns and order (the SQL chose both)."""
    return write_table(con, f"marts.{name}", columns, rows)


def _blank(
    rows: list[Row], cells: Iterable[tuple[Hashable, str]], extra: Mapping[int, Iterable[str]] | None = None
) -> None:
    """Set the given (row index, column) cells to NULL and list them in each row's suppressed_columns."""
    gone: dict[int, set[str]] = {}
    for i, col in cells:
        gone.setdefault(cast(int, i), set()).add(col)
    for i, cols in (extra or {}).items():
        gone.setdefault(i, set()).update(cols)
    for i, row in enumerate(rows):
        cols = gone.get(i, set())
        for col in cols:
            row[col] = None
        row["suppressed_columns"] = ",".join(sorted(cols)) or None


# --- report_overview ---------------------------------------------------------------------------------

OVERVIEW_COUNTS = ("patients", "episodes", "sessions", "sessions_alliance_measured")
# (overview column, qi_monthly column): the overview total is the sum of the practice months' cells,
# so a single suppressed month would follow from the total by subtraction.
OVERVIEW_MONTHLY_SUMS: tuple[tuple[str, str], ...] = (
    ("sessions", "sessions_attended"),
    ("sessions_alliance_measured", "sessions_alliance_measured"),
)


def build_report_overview(con: duckdb.DuckDBPyConnection, settings: MartSettings) -> int:
    """(Re)build marts.report_overview (needs alliance_sessions, qi_monthly, therapist_alliance).

    Suppression: small counts; measured sessions against sessions (the unmeasured remainder is
    implied); and a total whose practice months in marts.qi_monthly have exactly one suppressed cell
    is suppressed as well, so that month cannot be worked out as total minus the months shown.
    """
    run_sql(con, SQL_DIR / "report_overview.sql")
    columns, rows = _read(con, "report_overview")
    values: dict[tuple[Hashable, str], int | None] = {(0, c): rows[0][c] for c in OVERVIEW_COUNTS}
    relations = [Relation((0, "sessions"), ((0, "sessions_alliance_measured"),), hidden_remainder=True)]
    result = suppress(values, relations, settings.min_cell)
    blanked = set(result.suppressed)
    monthly = con.table("marts.qi_monthly").filter("level = 'practice'")
    for total, month_col in OVERVIEW_MONTHLY_SUMS:
        hidden_months = sum(1 for (v,) in monthly.select(month_col).fetchall() if v is None)
        if hidden_months == 1:
            blanked.add((0, total))
    blanked |= apply_rates(
        blanked, {"measurement_completion_rate": ("sessions_alliance_measured", "sessions")}, [0]
    )
    _blank(rows, blanked)
    return _rewrite(con, "report_overview", columns, rows)


# --- report_alliance_trajectory ----------------------------------------------------------------------

# mean and interval columns, each shown only when the count it averages over is not a small cell
TRAJECTORY_MEANS: dict[str, tuple[str, ...]] = {
    "sessions_patient_rated": (
        "mean_alliance_patient",
        "sd_alliance_patient",
        "ci_lower_patient",
        "ci_upper_patient",
    ),
    "sessions_clinician_rated": ("mean_alliance_clinician",),
    "sessions_change_patient": (
        "mean_change_patient",
        "sd_change_patient",
        "ci_lower_change_patient",
        "ci_upper_change_patient",
    ),
    "sessions_change_clinician": ("mean_change_clinician",),
}
# (rated, with a change): the sessions rated in an episode without a session-1 rating are the
# remainder, not shown but following from the row, so a small one is protected too
TRAJECTORY_NESTED: tuple[tuple[str, str], ...] = (
    ("sessions_patient_rated", "sessions_change_patient"),
    ("sessions_clinician_rated", "sessions_change_clinician"),
)


def build_report_alliance_trajectory(con: duckdb.DuckDBPyConnection, settings: MartSettings) -> int:
    """(Re)build marts.report_alliance_trajectory (needs alliance_sessions).

    Suppression: rated-session counts of 1 to min_cell - 1, with complements so that no session
    number's count follows from the 'all' row minus the others; means and intervals over a small
    count are blanked too.
    """
    run_sql(con, SQL_DIR / "report_alliance_trajectory.sql")
    columns, rows = _read(con, "report_alliance_trajectory")
    values: dict[tuple[Hashable, str], int | None] = {}
    for i, row in enumerate(rows):
        for col in TRAJECTORY_MEANS:
            values[(i, col)] = row[col]
    totals = [i for i, r in enumerate(rows) if r["level"] == "all"]
    parts = [i for i, r in enumerate(rows) if r["level"] == "session"]
    relations = [
        Relation((t, col), tuple((p, col) for p in parts)) for t in totals for col in TRAJECTORY_MEANS
    ]
    relations += [
        Relation((i, rated), ((i, change),), hidden_remainder=True)
        for i in range(len(rows))
        for rated, change in TRAJECTORY_NESTED
    ]
    result = suppress(values, relations, settings.min_cell)
    extra = {
        i: [
            m
            for count, means in TRAJECTORY_MEANS.items()
            if is_small(row[count], settings.min_cell)
            for m in means
        ]
        for i, row in enumerate(rows)
    }
    _blank(rows, result.suppressed, extra)
    return _rewrite(con, "report_alliance_trajectory", columns, rows)


# --- report_early_alliance_bins ------------------------------------------------------------------------


def build_report_early_alliance_bins(con: duckdb.DuckDBPyConnection, settings: MartSettings) -> int:
    """(Re)build marts.report_early_alliance_bins (needs episode_outcomes).

    Suppression: a band's episodes from 1 to min_cell - 1, with complements over the relation
    fit episodes = sum of the bands (the fit's count is published in report_early_alliance_fit and in
    alliance_associations: fixed here, never blanked); a band's mean only beside a shown count.
    """
    run_sql(con, SQL_DIR / "report_early_alliance_bins.sql")
    columns, rows = _read(con, "report_early_alliance_bins")
    values: dict[tuple[Hashable, str], int | None] = {
        (i, "episodes"): r["episodes"] for i, r in enumerate(rows)
    }
    total: tuple[Hashable, str] = ("fit", "episodes")
    values[total] = sum(int(r["episodes"] or 0) for r in rows)
    relation = Relation(total, tuple((i, "episodes") for i in range(len(rows))))
    result = suppress(values, [relation], settings.min_cell, fixed=[total])
    blanked = {c for c in result.suppressed if c != total}
    blanked |= {(i, "mean_phq9_improvement") for i, _ in blanked}
    _blank(rows, blanked)
    return _rewrite(con, "report_early_alliance_bins", columns, rows)


# --- report_adherence_by_alliance_tertile ------------------------------------------------------------


def build_report_adherence_by_alliance_tertile(con: duckdb.DuckDBPyConnection, settings: MartSettings) -> int:
    """(Re)build marts.report_adherence_by_alliance_tertile (needs adherence).

    Suppression: each group (measure x rater) has the relation total = third 1 + third 2 + third 3.
    A small third is suppressed with its complement (marts.suppression); then, stricter, when any
    third of a group is suppressed all three are (count and mean), so the chart never shows a partial
    step that invites comparing thirds of unequal certainty. A small total is suppressed too.
    """
    run_sql(con, SQL_DIR / "report_adherence_by_alliance_tertile.sql")
    columns, rows = _read(con, "report_adherence_by_alliance_tertile")
    groups: dict[tuple[str, str], list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault((row["measure"], row["rater"]), []).append(i)
    values: dict[tuple[Hashable, str], int | None] = {}
    relations: list[Relation] = []
    for members in groups.values():
        for i in members:
            values[(i, "n_patient_periods")] = rows[i]["n_patient_periods"]
        # the total is repeated on every row of the group: the first row's copy stands for all
        values[(members[0], "n_patient_periods_total")] = rows[members[0]]["n_patient_periods_total"]
        relations.append(
            Relation(
                (members[0], "n_patient_periods_total"), tuple((i, "n_patient_periods") for i in members)
            )
        )
    result = suppress(values, relations, settings.min_cell)
    blanked: set[tuple[Hashable, str]] = set()
    for members in groups.values():
        if any((i, "n_patient_periods") in result.suppressed for i in members):
            blanked |= {(i, c) for i in members for c in ("n_patient_periods", "mean_measure")}
        if (members[0], "n_patient_periods_total") in result.suppressed:
            blanked |= {(i, "n_patient_periods_total") for i in members}
    _blank(rows, blanked)
    return _rewrite(con, "report_adherence_by_alliance_tertile", columns, rows)


# --- report_data_quality -----------------------------------------------------------------------------

DATA_QUALITY_COLUMNS: list[tuple[str, str]] = [
    ("level", "VARCHAR"),
    ("table_name", "VARCHAR"),
    ("severity", "VARCHAR"),
    ("run_id", "VARCHAR"),
    ("checks_run", "INTEGER"),
    ("passed", "INTEGER"),
    ("failed", "INTEGER"),
    ("skipped", "INTEGER"),
    ("quarantined_rows", "INTEGER"),
    ("pass_rate", "DOUBLE"),
    ("suppressed_columns", "VARCHAR"),
    ("min_cell", "INTEGER"),
]


def data_quality_rows(summary: Sequence[Mapping[str, Any]], min_cell: int) -> list[Row]:
    """Rows of marts.report_data_quality from the newest run's summary (one per table x severity),
    plus the 'all' row that totals them; quarantined-record counts suppressed with complements."""
    rows: list[Row] = [
        {
            "level": "table",
            "table_name": str(s["table_name"]),
            "severity": str(s["severity"]),
            "run_id": str(s["run_id"]),
            **{c: int(s[c]) for c in ("checks_run", "passed", "failed", "skipped", "quarantined_rows")},
            "pass_rate": s["pass_rate"],
            "min_cell": min_cell,
        }
        for s in summary
    ]
    total: Row = {
        "level": "all",
        "table_name": None,
        "severity": None,
        "run_id": rows[0]["run_id"] if rows else None,
        **{
            c: sum(r[c] for r in rows)
            for c in ("checks_run", "passed", "failed", "skipped", "quarantined_rows")
        },
        "min_cell": min_cell,
    }
    decided = total["passed"] + total["failed"]  # skipped checks count in neither
    total["pass_rate"] = total["passed"] / decided if decided else None
    rows.append(total)
    # quarantined records are records about patients: small counts are suppressed like any other
    values: dict[tuple[Hashable, str], int | None] = {
        (i, "quarantined_rows"): r["quarantined_rows"] for i, r in enumerate(rows)
    }
    relation = Relation(
        (len(rows) - 1, "quarantined_rows"), tuple((i, "quarantined_rows") for i in range(len(rows) - 1))
    )
    _blank(rows, suppress(values, [relation], min_cell).suppressed)
    return rows


def build_report_data_quality(con: duckdb.DuckDBPyConnection, settings: MartSettings) -> int:
    """(Re)build marts.report_data_quality from `quality.check_results` (newest run).

    The per-table summary is `quality_checks.summary.summary_frame`, the same one `make demo` prints,
    so the two never disagree. Built after every other mart: in a Dagster run the other marts'
    blocking (ERROR) checks have then already been recorded in this run.
    """
    frame = summary_frame(con)
    rows = data_quality_rows(frame.to_dict("records"), settings.min_cell)
    return write_table(con, "marts.report_data_quality", DATA_QUALITY_COLUMNS, rows)
