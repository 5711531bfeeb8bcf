"""Peers on the pipeline's job (QuestionnaireResponse NDJSON to one row per answer), one per process.

Runs with the peers' own interpreter (`benchmarks/.peers-venv/bin/python`, see requirements.txt),
so it imports nothing from this repository: fhir4ds pins an older DuckDB than the pipeline's.

    python benchmarks/peers/run_peers.py --peer fhir4ds --ndjson QR.ndjson --out result.json --max 200000

Peers:
- `fhir4ds`: fhir4ds-v2 (SQL-on-FHIR v2 on DuckDB). Load = `FHIRDataLoader.load_ndjson`; flatten =
  the SQL its generator makes from `VIEW` (a ViewDefinition with `repeat` over `item` and
  `answer.item`, then `forEach` answer: one row per answer at any depth).
- `fhiry`: `Fhirndjson` (FHIR to pandas). It makes one row per resource and does not unnest items.
- `pandas`: naive `pd.json_normalize` with `record_path="item"` then one row per answer (top-level
  items only: answers inside groups are missed).

Slow peers are capped at `--max` responses (the first lines of the file); rates are per response.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
import traceback
from importlib.metadata import version
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # fhiry prints progress bars
# Read with the peers' interpreter, so not through pipelines.sqlfiles (this file imports nothing of ours).
ANSWER_COUNTS_SQL = Path(__file__).resolve().parent / "sql" / "answer_counts.sql"

# One row per answer at any depth: repeat walks item and answer.item, forEach answer emits the rows.
VIEW: dict[str, Any] = {
    "resource": "QuestionnaireResponse",
    "status": "active",
    "name": "questionnaire_answers",
    "select": [
        {
            "column": [
                {"path": "id", "name": "response_id"},
                {"path": "questionnaire", "name": "questionnaire"},
                {"path": "status", "name": "status"},
                {"path": "subject.reference", "name": "subject_ref"},
                {"path": "authored", "name": "authored"},
            ]
        },
        {
            "repeat": ["item", "answer.item"],
            "column": [{"path": "linkId", "name": "link_id"}],
            "select": [
                {
                    "forEach": "answer",
                    "column": [
                        {"path": "value.ofType(Coding).system", "name": "coding_system"},
                        {"path": "value.ofType(Coding).code", "name": "coding_code"},
                        {"path": "value.ofType(integer)", "name": "value_integer", "type": "integer"},
                        {"path": "value.ofType(decimal)", "name": "value_decimal", "type": "decimal"},
                        {"path": "value.ofType(boolean)", "name": "value_boolean", "type": "boolean"},
                    ],
                }
            ],
        },
    ],
}


def peak_rss_mb() -> float | None:
    """VmHWM of this process in MB."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmHWM:\s+(\d+)\s+kB", text, re.MULTILINE)
    return round(int(match.group(1)) / 1024, 1) if match else None


def _rate(n: int, seconds: float) -> float | None:
    return round(n / seconds, 1) if n and seconds > 0 else None


def sample_lines(path: Path, limit: int) -> list[str]:
    """The first `limit` parseable lines of an NDJSON file (0 = all)."""
    out: list[str] = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                json.loads(line)
            except ValueError:
                continue  # the planted truncated line: peers have no rejected table
            out.append(line)
            if limit and len(out) >= limit:
                break
    return out


def run_fhir4ds(lines: list[str], workdir: Path) -> dict[str, Any]:
    """fhir4ds-v2: load the NDJSON into its `resources` table, then the ViewDefinition."""
    import logging

    logging.disable(logging.WARNING)  # it logs every id seen twice (our version-2 lines)
    sample = workdir / "QuestionnaireResponse.ndjson"
    sample.write_text("\n".join(lines) + "\n")
    t0 = time.monotonic()
    import fhir4ds
    from fhir4ds.cql.loader import FHIRDataLoader

    con = fhir4ds.create_connection()
    setup = time.monotonic() - t0
    t0 = time.monotonic()
    loaded = FHIRDataLoader(con).load_ndjson(sample, strict=False)
    load = time.monotonic() - t0
    sql = fhir4ds.generate_view_sql(VIEW)
    # The generated SQL runs as a DuckDB relation, never spliced into other SQL text: `count` and
    # `create` wrap it as DuckDB's Python API does (SELECT count(*) FROM (...), CREATE TABLE ... AS).
    # count(*) over the view lets DuckDB skip the unused columns' FHIRPath calls: recorded (it is
    # the flattering number) but the flatten time is the materialised table, as the pipeline's is.
    t0 = time.monotonic()
    counted = con.sql(sql).count("*").fetchall()[0][0]
    count_only = time.monotonic() - t0
    t0 = time.monotonic()
    con.sql(sql).create("answers")
    rows = con.execute(ANSWER_COUNTS_SQL.read_text(encoding="utf-8")).fetchall()[0]
    flatten = time.monotonic() - t0
    return {
        "version": version("fhir4ds-v2"),
        "duckdb": version("duckdb"),
        "setup_seconds": round(setup, 3),
        "loaded": loaded,
        "load_seconds": round(load, 3),
        "flatten_seconds": round(flatten, 3),
        "count_only_seconds": round(count_only, 3),
        "count_only_rows": int(counted),
        "rows": int(rows[0]),
        "responses_with_rows": int(rows[1]),
        "rows_label": "answers (any depth)",
    }


def run_fhiry(lines: list[str], workdir: Path) -> dict[str, Any]:
    """fhiry: its NDJSON folder reader, one DataFrame row per resource (items stay nested)."""
    (workdir / "QuestionnaireResponse.ndjson").write_text("\n".join(lines) + "\n")
    t0 = time.monotonic()
    from fhiry.fhirndjson import Fhirndjson

    reader = Fhirndjson()
    reader.folder = str(workdir)
    setup = time.monotonic() - t0
    t0 = time.monotonic()
    reader.process_source()
    seconds = time.monotonic() - t0
    df = reader.df
    return {
        "version": version("fhiry"),
        "setup_seconds": round(setup, 3),
        "load_seconds": round(seconds, 3),
        "flatten_seconds": 0.0,
        "rows": len(df) if df is not None else 0,
        "rows_label": "one row per response; items not unnested",
    }


def run_pandas(lines: list[str], workdir: Path) -> dict[str, Any]:
    """Naive pandas: parse every line, json_normalize over `item`, explode answers, normalise them."""
    import pandas as pd

    t0 = time.monotonic()
    records = [json.loads(line) for line in lines]
    load = time.monotonic() - t0
    t0 = time.monotonic()
    items = pd.json_normalize(
        records,
        record_path="item",
        meta=["id", "questionnaire", "status"],
        meta_prefix="response.",
        errors="ignore",
    )
    answers = items.explode("answer")
    answers = answers[answers["answer"].notna()].reset_index(drop=True)
    values = pd.json_normalize(answers["answer"].tolist())
    out = pd.concat([answers.drop(columns=["answer"]), values], axis=1)
    flatten = time.monotonic() - t0
    return {
        "version": version("pandas"),
        "setup_seconds": 0.0,
        "load_seconds": round(load, 3),
        "flatten_seconds": round(flatten, 3),
        "rows": len(out),
        "rows_label": "answers of top-level items only (nested groups missed)",
    }


PEERS = {"fhir4ds": run_fhir4ds, "fhiry": run_fhiry, "pandas": run_pandas}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Time one peer on QuestionnaireResponse NDJSON")
    parser.add_argument("--peer", required=True, choices=sorted(PEERS))
    parser.add_argument("--ndjson", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--max", type=int, default=0, help="cap on responses (0 = all)")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"peer": args.peer}
    try:
        lines = sample_lines(args.ndjson, args.max)
        result["sample_responses"] = len(lines)
        result["capped"] = bool(args.max and len(lines) >= args.max)
        with tempfile.TemporaryDirectory(prefix=f"peer-{args.peer}-") as tmp:
            result.update(PEERS[args.peer](lines, Path(tmp)))
        n = len(lines)
        total = result["load_seconds"] + result["flatten_seconds"]
        result.update(
            status="ok",
            load_per_s=_rate(n, result["load_seconds"]),
            flatten_per_s=_rate(n, result["flatten_seconds"]),
            total_seconds=round(total, 3),
            total_per_s=_rate(n, total),
        )
    except Exception as exc:
        result.update(
            status="error", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()[-3000:]
        )
    result["peak_rss_mb"] = peak_rss_mb()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"{args.peer}: {result['status']}", file=sys.stderr)
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    raise SystemExit(main())
