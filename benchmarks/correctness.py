"""What an optimisation must not change: a fingerprint of the pipeline's results on a bench data set.

    python -m benchmarks.correctness --scale 10000 --out benchmarks/results/correctness_10k.json

runs the benchmark's stages (land, flatten, questionnaires, score, marts, quality: the code the assets
call) in this process on the generated data set, with a fixed pseudonym key, and writes one entry per
table: its row count and a SHA-256 of its rows in a canonical order. The tables are the raw layer's
(every resource table, `raw.rejected`, `raw.findings`), `staging.measure_scores`, every `marts.*`
table, and the quality verdicts (`quality.check_results`: which check, on which table, passed or not,
over how many rows, with how many unexpected; `quality.quarantine`: which record, which check, why).

Columns that name the run rather than the data (`run_id`, `fetched_at`, `checked_at`,
`quarantined_at`, when a pull started and finished, a landing origin's folder) are left out; doubles
are compared to 9 decimals.
`benchmarks/tests/test_correctness.py` compares a fresh fingerprint with the committed one, which was
made by the code before the performance work (commit 18a15ec): equal fingerprints mean identical
results.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

import duckdb

from benchmarks.common import read_json, write_json
from benchmarks.generate import ScaleConfig, ensure_dataset, folder_for

# The stages whose results are compared, in pipeline order (benchmarks.stages.STAGES names).
STAGES = ("land", "flatten", "questionnaires", "score", "marts", "quality")
# A fixed pseudonym key: pseudonyms in the marts are then the same in every run.
BENCH_KEY = "0123456789abcdef" * 4
VOLATILE = frozenset(
    {"run_id", "fetched_at", "checked_at", "quarantined_at", "rejected_at", "found_at"}
    | {"started_at", "finished_at", "updated_at"}  # when a pull ran, not what it brought
)
# Verdict columns of quality.check_results (details and sample keys may list rows in any order).
VERDICT_COLUMNS = (
    "suite",
    "table_name",
    "expectation_id",
    "severity",
    "success",
    "element_count",
    "unexpected_count",
    "outcome",
)
QUARANTINE_COLUMNS = ("table_name", "expectation_id", "severity", "source", "record_key", "reason")


def _tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    rows = con.execute(
        "SELECT table_schema || '.' || table_name FROM information_schema.tables "
        "WHERE table_type = 'BASE TABLE' AND (table_schema IN ('raw', 'marts') "
        "OR (table_schema = 'staging' AND table_name = 'measure_scores')) ORDER BY 1"
    ).fetchall()
    return [r[0] for r in rows]


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str]]:
    schema, name = table.split(".")
    return [
        (r[0], r[1])
        for r in con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
            [schema, name],
        ).fetchall()
    ]


def _expression(column: str, data_type: str) -> str:
    quoted = '"' + column.replace('"', '""') + '"'
    if data_type in ("DOUBLE", "FLOAT", "REAL") or data_type.startswith("DECIMAL"):
        return f"round({quoted}::DOUBLE, 9)"
    if column == "origin":
        # A landing origin names the data folder it was read from (`<folder>/file:line` for Bulk).
        return f"regexp_replace({quoted}, '^.*/', '')"
    return quoted


def table_fingerprint(
    con: duckdb.DuckDBPyConnection, table: str, columns: list[str] | None = None
) -> dict[str, Any]:
    """Row count and SHA-256 of the rows of `table` (chosen columns, volatile ones left out)."""
    typed = _columns(con, table)
    chosen = [
        (c, t) for c, t in typed if (columns is None and c not in VOLATILE) or (columns and c in columns)
    ]
    if not chosen:
        return {"rows": 0, "sha256": None}
    select = ", ".join(_expression(c, t) for c, t in chosen)
    digest = hashlib.sha256()
    count = 0
    # The relation API: table and column names come from the catalog, never from data.
    for row in con.table(table).project(select).order("ALL").fetchall():  # bench data sets: fits in memory
        digest.update(repr(row).encode())
        count += 1
    return {"rows": count, "columns": [c for c, _ in chosen], "sha256": digest.hexdigest()}


def fingerprint(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """The fingerprint of every compared table in the warehouse `con`."""
    out = {table: table_fingerprint(con, table) for table in _tables(con)}
    out["quality.check_results"] = table_fingerprint(con, "quality.check_results", list(VERDICT_COLUMNS))
    out["quality.quarantine"] = table_fingerprint(con, "quality.quarantine", list(QUARANTINE_COLUMNS))
    return out


def run_and_fingerprint(data: Path, workdir: Path) -> dict[str, Any]:
    """Run the compared stages on `data` into a fresh warehouse under `workdir`; fingerprint it."""
    from benchmarks.stages import BY_NAME, run_stage

    workdir.mkdir(parents=True, exist_ok=True)
    key = workdir / "pseudonym.key"
    key.write_text(BENCH_KEY + "\n")
    key.chmod(0o600)
    warehouse = workdir / "warehouse.duckdb"
    for name in STAGES:
        result = run_stage(BY_NAME[name], data, warehouse, "correctness", workdir)
        if result["status"] != "ok":
            raise RuntimeError(f"stage {name}: {result['status']} {result.get('error', '')}")
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return fingerprint(con)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fingerprint the pipeline's results on a bench data set")
    parser.add_argument("--scale", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--compare", type=Path, help="a fingerprint to compare with (exit 1 on a difference)")
    args = parser.parse_args(argv)
    data, _, _ = ensure_dataset(ScaleConfig(responses=args.scale, seed=args.seed), folder_for(args.scale))
    workdir = Path(tempfile.mkdtemp(prefix="correctness-"))
    try:
        result = {"scale": args.scale, "seed": args.seed, "tables": run_and_fingerprint(data, workdir)}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    write_json(args.out, result)
    if args.compare:
        expected = read_json(args.compare)["tables"]
        differ = sorted(
            t for t in set(expected) | set(result["tables"]) if expected.get(t) != result["tables"].get(t)
        )
        for table in differ:
            print(f"differs: {table}: {expected.get(table)} != {result['tables'].get(table)}")
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
