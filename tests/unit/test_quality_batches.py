"""Batched validation gives exactly the outcomes of one whole DataFrame.

Large datasets are validated in column-projected, hash-partitioned batches (quality_checks/runner.py)
so the quality stage's memory stays bounded. On the generated clinic's warehouse (with its planted
mess: failing checks, quarantined records), every suite is evaluated once with every dataset as one
DataFrame and once in batches of 3,000 rows; every outcome, count, sample key, quarantined record
and detail must be the same.
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
from quality_checks.runner import CheckOutcome, _batching, _Planned, evaluate_suite
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
    settings = QualitySettings.from_env().model_copy(update={"now": NOW})
    registry = load_registry()
    whole: dict[str, dict[str, Any]] = {}
    batched: dict[str, dict[str, Any]] = {}
    try:
        limit_before = con.execute("SELECT current_setting('memory_limit')").fetchall()
        with caplog.at_level(logging.INFO, logger="quality_checks.runner"):
            for suite in load_suites():
                for o in evaluate_suite(con, suite, settings=settings, registry=registry, chunk_rows=None):
                    whole[f"{suite.name}.{o.check.id}"] = _dump(o)
                for o in evaluate_suite(con, suite, settings=settings, registry=registry, chunk_rows=3000):
                    batched[f"{suite.name}.{o.check.id}"] = _dump(o)
        # the suites' own DuckDB memory cap is lifted again afterwards
        assert con.execute("SELECT current_setting('memory_limit')").fetchall() == limit_before
    finally:
        con.close()
    assert batched == whole
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
