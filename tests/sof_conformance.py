"""Run the official SQL-on-FHIR v2 test suite through the ViewDefinition compiler on DuckDB.

`make conformance` runs this module: every case of every file in tests/fixtures/sql-on-fhir-v2/,
each file's resources loaded into an in-memory table, rows compared as an unordered multiset (the
suite's rules for `expect`, `expectColumns` and `expectError`). It writes the suite's test-report
format to reports/sof-test-report.json, validates it against test-report.schema.json and prints a
one-line summary. tests/unit/test_sof_conformance.py runs the same function under pytest.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import jsonschema

from fhir_mappings.views import build_view

SUITE_DIR = Path(__file__).resolve().parent / "fixtures" / "sql-on-fhir-v2"
REPORT_PATH = Path(__file__).resolve().parent.parent / "reports" / "sof-test-report.json"
SCHEMA_FILES = {"tests.schema.json", "test-report.schema.json"}


@dataclass
class CaseResult:
    """The outcome of one test case."""

    file: str
    name: str
    tags: tuple[str, ...]
    passed: bool
    error: str | None = None


@dataclass
class SuiteResult:
    """All case outcomes, with the counts the summary line reports."""

    cases: list[CaseResult] = field(default_factory=list)

    def count(self, tag: str | None = None) -> tuple[int, int]:
        """(passed, total) over all cases, or over the cases carrying `tag`."""
        chosen = [c for c in self.cases if tag is None or tag in c.tags]
        return sum(c.passed for c in chosen), len(chosen)

    def per_file(self) -> dict[str, tuple[int, int]]:
        """(passed, total) per test file."""
        out: dict[str, tuple[int, int]] = {}
        for c in self.cases:
            p, t = out.get(c.file, (0, 0))
            out[c.file] = (p + c.passed, t + 1)
        return out

    def summary(self) -> str:
        """The one-line summary `make conformance` prints."""
        p, t = self.count()
        sp, st = self.count("shareable")
        ep, et = self.count("experimental")
        return f"SQL-on-FHIR v2 conformance: {p}/{t} passed (shareable {sp}/{st}, experimental {ep}/{et})"

    def report(self) -> dict[str, Any]:
        """The results in the suite's test-report format."""
        out: dict[str, Any] = {}
        for c in self.cases:
            result: dict[str, Any] = {"passed": c.passed}
            if c.error:
                result["error"] = c.error
            out.setdefault(c.file, {"tests": []})["tests"].append({"name": c.name, "result": result})
        return out


def _normalise(value: Any) -> Any:
    """A canonical form for comparing a value with the suite's JSON: numbers as floats, JSON parsed."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float | Decimal):
        return float(value)
    if isinstance(value, list | tuple):
        return [_normalise(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    return value


def _row_key(row: dict[str, Any]) -> str:
    return json.dumps(_normalise(row), sort_keys=True)


Execute = Callable[[dict[str, Any]], tuple[list[str], list[dict[str, Any]]]]


def duckdb_executor(con: duckdb.DuckDBPyConnection) -> Execute:
    """Run views through the compiler on `con`, whose `resources` table holds the file's resources."""

    def execute(view: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
        compiled = build_view(view, source_relation="resources")
        cursor = con.execute(compiled.sql)
        names = [d[0] for d in cursor.description]
        json_columns = {c.name for c in compiled.columns if c.sql_type.startswith("JSON")}
        rows = []
        for values in cursor.fetchall():
            row = {}
            for name, value in zip(names, values, strict=True):
                if name in json_columns and value is not None:
                    value = [json.loads(v) for v in value] if isinstance(value, list) else json.loads(value)
                row[name] = value
            rows.append(row)
        return names, rows

    return execute


def sqlonfhir_executor(resources: list[dict[str, Any]]) -> Execute:
    """Run views through sqlonfhir (an independent pure-Python implementation), for comparison only."""
    from sqlonfhir import evaluate  # dev dependency, imported only when asked for

    def execute(view: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
        # sqlonfhir rewrites the view in place, so it gets copies
        rows = evaluate(copy.deepcopy(resources), copy.deepcopy(view))
        return (list(rows[0]) if rows else []), rows

    return execute


def run_case(execute: Execute, case: dict[str, Any]) -> tuple[bool, str | None]:
    """Run one case with `execute`; return (passed, error message)."""
    try:
        names, rows = execute(case["view"])
    except Exception as exc:  # any failure, at compile or run time, is the error a case may expect
        if case.get("expectError"):
            return True, None
        return False, f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"
    if case.get("expectError"):
        return False, "expected an error, the view ran"
    if "expectColumns" in case:
        if names == case["expectColumns"]:
            return True, None
        return False, f"expected columns {case['expectColumns']}, got {names}"
    expected = Counter(_row_key(r) for r in case["expect"])
    actual = Counter(_row_key(r) for r in rows)
    if expected == actual:
        return True, None
    missing = list((expected - actual).elements())[:3]
    extra = list((actual - expected).elements())[:3]
    return False, f"rows differ: missing {missing}, unexpected {extra}"


def run_suite(suite_dir: Path = SUITE_DIR, implementation: str = "duckdb") -> SuiteResult:
    """Run every case of every test file in `suite_dir` through `implementation` (duckdb or sqlonfhir)."""
    result = SuiteResult()
    for path in sorted(suite_dir.glob("*.json")):
        if path.name in SCHEMA_FILES:
            continue
        suite = json.loads(path.read_text(encoding="utf-8"))
        resources = suite.get("resources", [])
        con = duckdb.connect()
        try:
            con.execute("CREATE TABLE resources (id VARCHAR, resource JSON)")
            for res in resources:
                con.execute("INSERT INTO resources VALUES (?, ?)", [res.get("id"), json.dumps(res)])
            execute = duckdb_executor(con) if implementation == "duckdb" else sqlonfhir_executor(resources)
            for case in suite["tests"]:
                passed, error = run_case(execute, case)
                tags = tuple(case.get("tags", suite.get("tags", [])))
                result.cases.append(CaseResult(path.name, case["title"], tags, passed, error))
        finally:
            con.close()
    return result


def write_report(result: SuiteResult, path: Path = REPORT_PATH, suite_dir: Path = SUITE_DIR) -> None:
    """Write the report and validate it against the suite's test-report schema."""
    report = result.report()
    schema = json.loads((suite_dir / "test-report.schema.json").read_text(encoding="utf-8"))
    jsonschema.validate(report, schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Run the suite, write and validate the report, print the failures and the summary line.

    `--implementation sqlonfhir` runs the same cases through sqlonfhir instead, to measure it per file
    (docs/views.md); that run writes no report.
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--implementation", choices=("duckdb", "sqlonfhir"), default="duckdb")
    args = parser.parse_args(argv)
    result = run_suite(implementation=args.implementation)
    for c in result.cases:
        if not c.passed:
            print(f"FAIL {c.file} :: {c.name} :: {c.error}")
    if args.implementation == "duckdb":
        write_report(result)
        print(f"report: {REPORT_PATH}")
    else:
        print("per file: " + ", ".join(f"{f} {p}/{t}" for f, (p, t) in result.per_file().items()))
    print(
        result.summary().replace("conformance", f"conformance ({args.implementation})", 1)
        if args.implementation != "duckdb"
        else result.summary()
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
