"""`make demo`'s closing summary: rows per table, rejections, the last pull's arithmetic, where every
response went and the data-quality summary (queries in demo/sql/). Reads the warehouse only."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import duckdb

from fhir_mappings.scoring import SQL_DIR as SCORING_SQL_DIR
from pipelines.sqlfiles import count_rows, query_sql

SQL_DIR = Path(__file__).resolve().parent / "sql"
# The scoring step reports the same totals in its run metadata: one query for both.
TOTALS_BY_INSTRUMENT_SQL = SCORING_SQL_DIR / "totals_by_instrument.sql"


def summarize(warehouse: Path) -> str:
    """A short plain-text summary of what the warehouse holds."""
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        lines = [f"Warehouse: {warehouse}", "", f"{'table':<36}{'rows':>10}"]
        for schema, name in query_sql(con, SQL_DIR / "warehouse_tables.sql"):
            # Names read from the warehouse's catalog: count_rows checks each is a plain identifier.
            n = count_rows(con, f"{schema}.{name}")
            lines.append(f"{str(schema) + '.' + str(name):<36}{n:>10}")
        rej = query_sql(con, SQL_DIR / "rejections.sql")
        if rej:
            lines += ["", "Rejected resources (kept in raw.rejected with the full reason):"]
            lines += [f"  {t!s:<24}{r!s:<40}{n!s:>6}" for t, r, n in rej]
        log_rows = query_sql(con, SQL_DIR / "last_pull.sql")
        if log_rows and log_rows[0][0] is not None:
            f, landed, new, rj, d = log_rows[0]
            lines += [
                "",
                f"Last run: fetched {f} = landed {landed} (new versions {new}) + rejected {rj} "
                f"+ duplicates {d}",
            ]
        lines += _scoring_summary(con)
        return "\n".join(lines)
    finally:
        con.close()


def quality_summary(warehouse: Path) -> str:
    """The data-quality summary of the newest checks run (quality_checks/summary.py)."""
    from quality_checks.summary import summary_text

    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return summary_text(con)
    finally:
        con.close()


def _scoring_summary(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Valid scores per instrument, and where every other response went."""
    have = {str(r[0]) for r in query_sql(con, SQL_DIR / "staging_tables.sql")}
    if "measure_scores" not in have:
        return []
    lines = ["", f"{'Scores (staging.measure_scores, total scale)':<46}{'valid':>8}{'invalid':>9}"]
    for inst, valid, invalid in query_sql(con, TOTALS_BY_INSTRUMENT_SQL):
        lines.append(f"  {inst!s:<44}{valid!s:>8}{invalid!s:>9}")
    for table in ("staging.unmapped_responses", "staging.excluded_responses"):
        rows = query_sql(con, SQL_DIR / "reasons.sql", identifiers={"table": table})
        if rows:
            lines.append(f"{table}:")
            lines += [f"  {reason!s:<44}{n!s:>8}" for reason, n in rows]
    # Four count(*)s: BIGINT, never NULL, so DuckDB returns four ints.
    row = query_sql(con, SQL_DIR / "response_reconciliation.sql")[0]
    responses, scored, unmapped, excluded = cast(tuple[int, int, int, int], row)
    lines.append(
        f"Responses {responses} = scored {scored} + unmapped {unmapped} + excluded {excluded}"
        + ("" if responses == scored + unmapped + excluded else "  << DOES NOT RECONCILE")
    )
    return lines
