"""Data-quality summary of the newest run: a DataFrame for the QI report, plain text for `make demo`.

Per table and severity: checks run, passed, failed, skipped (table not present), quarantined rows
and the pass rate (passed / (passed + failed); skipped checks count in neither).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import orjson
import pandas as pd

from pipelines.sqlfiles import query_sql, read_sql, render
from pipelines.warehouse import table_exists

SQL_DIR = Path(__file__).resolve().parent / "sql"

SUMMARY_COLUMNS = [
    "run_id",
    "table_name",
    "severity",
    "checks_run",
    "passed",
    "failed",
    "skipped",
    "blocking",
    "quarantined_rows",
    "pass_rate",
]


def _run_frame(con: duckdb.DuckDBPyConnection, file: str, run_id: str) -> pd.DataFrame:
    """The rows of a one-run query file as a DataFrame (DuckDB's column types kept), the run id bound."""
    # render() with no identifiers: the file may hold no placeholder, only the bound $run_id.
    return con.execute(render(read_sql(SQL_DIR / file)), {"run_id": run_id}).df()


def newest_run(con: duckdb.DuckDBPyConnection) -> str | None:
    """The run id of the newest check result, or None when nothing has been checked."""
    if not table_exists(con, "quality.check_results"):
        return None
    rows = query_sql(con, SQL_DIR / "newest_run.sql")
    return str(rows[0][0]) if rows else None


def summary_frame(con: duckdb.DuckDBPyConnection, run_id: str | None = None) -> pd.DataFrame:
    """One row per (table, severity) for `run_id` (default: the newest run)."""
    run = run_id or newest_run(con)
    if run is None:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    frame = _run_frame(con, "run_summary.sql", run)
    return frame[SUMMARY_COLUMNS]


def failed_checks(con: duckdb.DuckDBPyConnection, run_id: str | None = None) -> pd.DataFrame:
    """Every check of the run that did not pass (or was skipped), worst first."""
    run = run_id or newest_run(con)
    if run is None:
        return pd.DataFrame(
            columns=["table_name", "expectation_id", "severity", "outcome", "unexpected_count", "sample_keys"]
        )
    return _run_frame(con, "run_failed_checks.sql", run)


def _fmt_rate(value: object) -> str:
    return "-" if value is None or pd.isna(value) else f"{100 * float(value):.1f}%"  # type: ignore[arg-type]


def summary_text(con: duckdb.DuckDBPyConnection, run_id: str | None = None, max_failed: int = 40) -> str:
    """A plain-text table (no colour, fixed width) for the end of `make demo`."""
    run = run_id or newest_run(con)
    if run is None:
        return "Data quality: no check results yet (quality.check_results is empty)."
    frame = summary_frame(con, run)
    header = (
        f"{'table':<40}{'severity':<10}{'run':>5}{'passed':>8}{'failed':>8}{'skipped':>9}"
        f"{'quarantined':>13}{'pass rate':>11}"
    )
    lines = [f"Data quality (run {run}):", "", header, "-" * len(header)]
    for r in frame.itertuples(index=False):
        lines.append(
            f"{r.table_name:<40}{r.severity:<10}{r.checks_run:>5}{r.passed:>8}{r.failed:>8}{r.skipped:>9}"
            f"{r.quarantined_rows:>13}{_fmt_rate(r.pass_rate):>11}"
        )
    total_pass, total_fail = int(frame["passed"].sum()), int(frame["failed"].sum())
    overall = total_pass / (total_pass + total_fail) if total_pass + total_fail else None
    lines.append("-" * len(header))
    lines.append(
        f"{'all':<40}{'':<10}{int(frame['checks_run'].sum()):>5}{total_pass:>8}{total_fail:>8}"
        f"{int(frame['skipped'].sum()):>9}{int(frame['quarantined_rows'].sum()):>13}{_fmt_rate(overall):>11}"
    )
    failed = failed_checks(con, run)
    skipped = sorted(set(failed.loc[failed["outcome"] == "skipped", "table_name"]))
    failed = failed[failed["outcome"] != "skipped"]
    if skipped:
        lines += ["", f"Skipped, table not present: {', '.join(skipped)}"]
    if not failed.empty:
        lines += ["", "Checks that did not pass (WARN annotates; contained = quarantined, downstream ran):"]
        for r in failed.head(max_failed).itertuples(index=False):
            keys = orjson.loads(r.sample_keys) if isinstance(r.sample_keys, str) else []
            count = "" if pd.isna(r.unexpected_count) else f"{int(r.unexpected_count)} rows"
            example = f"  e.g. {', '.join(keys[:3])}" if keys else ""
            name = f"{r.table_name}.{r.expectation_id}"
            lines.append(f"  {r.severity:<6}{r.outcome:<10}{name:<62}{count:>11}{example}")
        if len(failed) > max_failed:
            lines.append(f"  ... and {len(failed) - max_failed} more (see quality.check_results)")
    lines += [
        "",
        "Quarantined records: SELECT * FROM quality.current_quarantine; trend: quality.check_results.",
    ]
    return "\n".join(lines)
