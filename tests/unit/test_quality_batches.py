"""Batched validation gives exactly the outcomes of one whole DataFrame.

Large datasets are validated in column-projected, hash-partitioned batches (quality_checks/runner.py)
so the quality stage's memory stays bounded. On the generated clinic's warehouse (with its planted
mess: failing checks, quarantined records), every suite is evaluated once with every dataset as one
DataFrame and once in batches of 3,000 rows; every outcome, count, sample key, quarantined record
and detail must be the same. The registry-conditioned range checks, evaluated column-wise, must also
give exactly what GX's own row conditions give.
"""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime
from typing import Any

import duckdb
import pytest

from fhir_mappings.registry import load_registry
from quality_checks.params import QualitySettings
from quality_checks.runner import (
    ROW,
    CheckOutcome,
    _batching,
    _Config,
    _gx,
    _Local,
    _local_results,
    _Planned,
    _validate,
    evaluate_suite,
)
from quality_checks.suite import Check, ExpectationSpec, load_suites
from tests.support.generated_warehouse import generated_warehouse_file

NOW = datetime(2026, 12, 1, tzinfo=UTC)  # one clock for both evaluations (freshness checks read it)


def _dump(o: CheckOutcome) -> dict[str, Any]:
    return {
        "outcome": o.outcome,
        "success": o.success,
        "element_count": o.element_count,
        "unexpected_count": o.unexpected_count,
        "unexpected_percent": o.unexpected_percent,
        "sample_keys": o.sample_keys,
        "quarantine": [(q.source, q.record_key, q.reason, q.record) for q in o.quarantine],
        "details": o.details,
    }


@pytest.mark.slow  # builds the generated warehouse and evaluates every suite twice (minutes)
def test_batches_match_one_whole_frame(
    tmp_path_factory: pytest.TempPathFactory, caplog: pytest.LogCaptureFixture
) -> None:
    source = generated_warehouse_file(tmp_path_factory)
    copy = tmp_path_factory.mktemp("batches") / "warehouse.duckdb"
    shutil.copy(source, copy)
    con = duckdb.connect(str(copy))
    # Three scores out of their instrument's range (the clinic has none): the registry-conditioned
    # range checks then fail, so the comparisons below cover their failures too.
    con.execute(
        "UPDATE staging.measure_scores SET score = score + 1000 WHERE response_id IN "
        "(SELECT DISTINCT response_id FROM staging.measure_scores ORDER BY response_id LIMIT 3)"
    )
    settings = QualitySettings.from_env().model_copy(update={"now": NOW})
    registry = load_registry()
    whole: dict[str, dict[str, Any]] = {}
    batched: dict[str, dict[str, Any]] = {}
    by_gx: dict[str, dict[str, Any]] = {}  # registry-conditioned ranges through GX's row conditions
    try:
        limit_before = con.execute("SELECT current_setting('memory_limit')").fetchall()
        with caplog.at_level(logging.INFO, logger="quality_checks.runner"):
            for suite in load_suites():
                for o in evaluate_suite(con, suite, settings=settings, registry=registry, chunk_rows=None):
                    whole[f"{suite.name}.{o.check.id}"] = _dump(o)
                for o in evaluate_suite(con, suite, settings=settings, registry=registry, chunk_rows=3000):
                    batched[f"{suite.name}.{o.check.id}"] = _dump(o)
                if any(s.for_each for c in suite.checks for s in c.expectations):
                    for o in evaluate_suite(
                        con, suite, settings=settings, registry=registry, chunk_rows=None, columnwise=False
                    ):
                        by_gx[f"{suite.name}.{o.check.id}"] = _dump(o)
        # the suites' own DuckDB memory cap is lifted again afterwards
        assert con.execute("SELECT current_setting('memory_limit')").fetchall() == limit_before
    finally:
        con.close()
    assert batched == whole
    # The column-wise registry ranges give GX's own outcomes, failures included.
    assert by_gx == {k: whole[k] for k in by_gx}
    conditioned = [
        f"{suite.name}.{c.id}"
        for suite in load_suites()
        for c in suite.checks
        if any(s.for_each and s.for_each.startswith("registry") for s in c.expectations)
    ]
    assert any(whole[k]["unexpected_count"] for k in conditioned)
    # The comparison covers failing checks with quarantined records and batches keyed on the
    # uniqueness columns, not only passing checks on one batch.
    assert any(d["quarantine"] for d in whole.values())
    assert any(d["outcome"] == "warning" for d in whole.values())
    assert "keyed on ['source', 'response_id'" in caplog.text
    assert "answers:" in caplog.text


def _planned(types_and_keys: list[tuple[str, list[str]]], kwargs: dict[str, Any] | None = None) -> _Planned:
    specs = tuple(ExpectationSpec(type=t, kwargs=kwargs or {}) for t, _ in types_and_keys)
    check = Check("c", "s", "a.b", "d", "ERROR", "d", ("id",), specs)
    planned = _Planned(check)
    planned.types = {t for t, _ in types_and_keys}
    planned.unique_keys = [k for _, k in types_and_keys if k]
    return planned


class _Rows:
    rows = 1000


def test_batching_falls_back_to_one_frame_when_a_split_could_change_the_result() -> None:
    data: Any = _Rows()
    unique = "expect_compound_columns_to_be_unique"
    row_local = "expect_column_values_to_not_be_null"
    # row-local and uniqueness sharing a key: batches hashed on the common part of the keys
    plans = [
        _planned([(unique, ["source", "id", "v"]), (row_local, [])]),
        _planned([(unique, ["source", "id"])]),
    ]
    assert _batching(plans, data, 100) == (10, ["source", "id"])
    assert _batching([_planned([(row_local, [])])], data, 100) == (10, [])
    # small enough, or batching disabled: one frame
    assert _batching(plans, data, 1000)[0] == 1
    assert _batching(plans, data, None)[0] == 1
    # uniqueness on unrelated keys, a table-level expectation, or `mostly`: one frame
    assert _batching([_planned([(unique, ["a"])]), _planned([(unique, ["b"])])], data, 100)[0] == 1
    assert _batching([_planned([("expect_table_row_count_to_equal", [])])], data, 100)[0] == 1
    assert _batching([_planned([(row_local, [])], {"mostly": 0.9})], data, 100)[0] == 1


def test_columnwise_ranges_give_what_gx_row_conditions_give() -> None:
    import pandas as pd

    frame = pd.DataFrame(
        {
            "instrument": ["a", "a", "b", None, "a", "a", "b"],
            "scale": ["total", "total", "total", "total", "sub", "total", "total"],
            "score": pd.Series([1, 50, 30, 99, 99, None, -1], dtype="Int64"),
            "ratio": [0.5, 1.5, float("nan"), 0.1, 0.2, 0.3, 2.0],
        }
    )
    frame[ROW] = range(10, 10 + len(frame))
    gx = _gx()
    cases = [
        ("score", 0, 10, (("instrument", "a"), ("scale", "total")), 'instrument=="a" & scale=="total"'),
        ("score", 0, 27, (("instrument", "b"),), 'instrument=="b"'),
        ("ratio", 0.0, 1.0, (("instrument", "a"),), 'instrument=="a"'),
        ("score", 0, 10, (("instrument", "zzz"),), 'instrument=="zzz"'),  # selects no row
    ]
    check = Check("c", "s", "a.b", "d", "ERROR", "d", ("id",), ())
    planned = _Planned(check)
    suite = gx.gx.ExpectationSuite(name="compare")
    for seq, (column, lo, hi, condition, text) in enumerate(cases):
        meta = {"check": "c", "part": f"0:{seq}", "seq": seq}
        planned.local.append(
            _Local(_Config("expect_column_values_to_be_between", meta), column, lo, hi, condition)
        )
        suite.add_expectation(
            gx.gxe.ExpectColumnValuesToBeBetween(
                column=column,
                min_value=lo,
                max_value=hi,
                row_condition=text,
                condition_parser="pandas",
                meta=meta,
            )
        )
    by_gx = {int(r.expectation_config.meta["seq"]): r for r in _validate(gx, suite, frame)}
    ours = {int(r.expectation_config.meta["seq"]): r for r in _local_results([planned], frame)}
    assert set(ours) == set(by_gx) == set(range(len(cases)))
    for seq, res in by_gx.items():
        mine = ours[seq]
        assert mine.success == res.success
        for field in ("element_count", "unexpected_count", "partial_unexpected_list"):
            assert mine.result[field] == res.result[field], (seq, field)
        assert [i[ROW] for i in mine.result["unexpected_index_list"]] == [
            i[ROW] for i in res.result["unexpected_index_list"]
        ]
    assert ours[0].result["unexpected_count"] == 1 and ours[2].result["unexpected_count"] == 1
    assert ours[3].result["element_count"] == 0 and ours[3].success
