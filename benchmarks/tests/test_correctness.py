"""The performance work changes no result: the 10k bench data set gives the fingerprint that the code
before it gave (benchmarks/results/correctness_10k.json, made at commit 18a15ec)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from benchmarks.common import BENCH_DIR, read_json
from benchmarks.correctness import fingerprint, run_and_fingerprint, table_fingerprint
from benchmarks.generate import ScaleConfig, ensure_dataset

GOLDEN = BENCH_DIR / "results" / "correctness_10k.json"


@pytest.mark.slow
def test_measure_scores_marts_and_verdicts_are_those_before_the_performance_work(tmp_path: Path) -> None:
    golden = read_json(GOLDEN)
    config = ScaleConfig(responses=golden["scale"], seed=golden["seed"])
    data, _, _ = ensure_dataset(config, tmp_path / "data")
    now = run_and_fingerprint(data, tmp_path / "work")
    expected = golden["tables"]
    assert now["staging.measure_scores"]["rows"] > 20_000  # the comparison is about real results
    assert any(t.startswith("marts.") for t in expected) and expected["quality.check_results"]["rows"] > 50
    assert sorted(now) == sorted(expected)
    assert {t: v for t, v in now.items() if v != expected[t]} == {}


def test_the_fingerprint_sees_one_changed_score_and_ignores_the_run(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.execute("CREATE SCHEMA staging; CREATE SCHEMA quality")
    con.execute("CREATE TABLE staging.measure_scores (response_id VARCHAR, total DOUBLE, run_id VARCHAR)")
    con.execute("INSERT INTO staging.measure_scores VALUES ('a', 12.0, 'run-1'), ('b', 7.5, 'run-1')")
    for name in ("check_results", "quarantine"):
        con.execute(f"CREATE TABLE quality.{name} (table_name VARCHAR, run_id VARCHAR)")
    before = fingerprint(con)
    con.execute("UPDATE staging.measure_scores SET run_id = 'run-2'")
    assert fingerprint(con) == before  # which run built it is not a result
    con.execute("UPDATE staging.measure_scores SET total = 12.0000000001 WHERE response_id = 'a'")
    assert fingerprint(con) == before  # below the 9-decimal comparison
    con.execute("UPDATE staging.measure_scores SET total = 13 WHERE response_id = 'a'")
    changed = table_fingerprint(con, "staging.measure_scores")
    assert changed["rows"] == 2 and changed != before["staging.measure_scores"]
