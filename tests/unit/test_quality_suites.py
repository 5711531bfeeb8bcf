"""Suite files: the shipped ones load and make sense, invalid ones fail naming file and check, the
marts template expands, thresholds come from the environment, and the domain code needs neither
Dagster nor (until it validates) Great Expectations."""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from fhir_mappings.registry import load_registry
from marts.build import MART_NAMES
from quality_checks.params import QualitySettings, registry_frames
from quality_checks.runner import count_columns
from quality_checks.suite import SuiteError, load_suites

REPO = Path(__file__).resolve().parents[2]


def test_shipped_suites_cover_every_layer():
    suites = {s.name: s for s in load_suites()}
    assert {"raw_responses", "raw_intake", "staging_answers", "measure_scores"} <= set(suites)
    assert {s.asset for s in suites.values()} >= {
        ("raw", "questionnaire_response"),
        ("raw", "questionnaire"),
        ("staging", "questionnaire_answers"),
        ("staging", "measure_scores"),
        *(
            ("marts", m)
            for m in (
                "alliance_sessions",
                "episode_outcomes",
                "adherence",
                "therapist_alliance",
                "qi_monthly",
                "alliance_associations",
            )
        ),
    }
    tables = {c.table for s in suites.values() for c in s.checks}
    assert {
        "raw.questionnaire_response",
        "raw.patient",
        "raw.encounter",
        "raw.fetch_log",
        "raw.rejected",
        "raw.findings",
        "staging.questionnaire_responses",
        "staging.questionnaire_answers",
        "staging.measure_scores",
        "staging.unmapped_responses",
        "staging.excluded_responses",
    } <= tables
    ids = [c.id for s in suites.values() for c in s.checks]
    assert len(ids) == len(set(ids)), "check ids are unique across suites (they name Dagster checks)"


def test_every_expectation_type_exists_in_great_expectations():
    import great_expectations.expectations as gxe

    for suite in load_suites():
        for check in suite.checks:
            assert check.severity in ("ERROR", "WARN")
            assert check.description and check.key_columns
            for spec in check.expectations:
                assert hasattr(gxe, spec.class_name), (check.id, spec.type)


def test_only_row_level_error_checks_quarantine_and_they_key_on_response_id():
    for suite in load_suites():
        for check in suite.checks:
            if check.quarantine:
                assert check.severity == "ERROR"
                # the marts anti-join (table_name, source, record_key = response_id)
                assert check.table == "staging.measure_scores" and check.key_columns == ("response_id",)


def test_instrument_ranges_are_never_typed_in_a_suite():
    """Range checks on scores expand over the registry; no suite hard-codes an instrument's range."""
    suites = {s.name: s for s in load_suites()}
    checks = {c.id: c for c in suites["measure_scores"].checks}
    for cid in ("ms_score_in_range", "ms_answer_scores_in_item_range", "ms_reported_total_in_range"):
        (spec,) = checks[cid].expectations
        assert spec.for_each in ("registry_scale", "registry_instrument", "registry_total")
        assert str(spec.kwargs["min_value"]).startswith("$") and str(spec.kwargs["max_value"]).startswith("$")


def test_registry_frames_mirror_the_registry():
    registry = load_registry()
    frames = registry_frames(registry)
    scales = frames["qc_registry_scales"].set_index(["instrument", "scale"])
    for inst in registry.values():
        for name, scale in inst.scales.items():
            row = scales.loc[(inst.id, name)]
            assert (row["scale_min"], row["scale_max"]) == tuple(float(v) for v in scale.range)
            assert row["items_expected"] == len(scale.items)


def test_marts_template_expands_to_one_suite_per_mart():
    marts = {s.name: s for s in load_suites() if s.name.startswith("mart_")}
    assert {s.asset[1] for s in marts.values()} == set(MART_NAMES)  # every mart has its suite
    for s in marts.values():
        assert s.when_missing == "skip"
        ids = {c.id for c in s.checks}
        mart = s.asset[1]
        assert {f"{mart}_unique_key", f"{mart}_key_present"} <= ids
        assert all(c.severity == "ERROR" and not c.quarantine for c in s.checks)
    assert "qi_monthly_small_cells_suppressed" in {c.id for c in marts["mart_qi_monthly"].checks}
    for mart in MART_NAMES:
        if mart.startswith("report_"):  # the QI report's aggregates are checked for small cells
            assert f"{mart}_small_cells_suppressed" in {c.id for c in marts[f"mart_{mart}"].checks}
    assert "alliance_sessions_small_cells_suppressed" not in {
        c.id for c in marts["mart_alliance_sessions"].checks
    }


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ("severity: FATAL", "severity must be ERROR or WARN"),
        ("severity: WARN\n    quarantine: true", "only ERROR checks quarantine"),
        ("severity: ERROR\n    dataset: nope", "unknown dataset"),
        ("severity: ERROR\n    key_columns: []", "key_columns are required"),
        ("severity: ERROR\n    expect: {type: column_is_fine}", "not a Great Expectations expectation"),
        ("severity: ERROR\n    expect: {type: expect_x, for_each: planets}", "for_each"),
        ("severity: ERROR\n    table: just_a_table", "must be schema.table"),
    ],
)
def test_invalid_suites_fail_naming_file_and_check(tmp_path, snippet, message):
    base = """
suite: s
asset: staging/t
datasets:
  d: {sql: "SELECT 1 AS id"}
checks:
  - id: c1
    table: staging.t
    dataset: d
    description: d
    key_columns: [id]
    expect: {type: expect_column_values_to_not_be_null, kwargs: {column: id}}
    SNIPPET
"""
    # later keys override earlier ones in YAML mappings
    (tmp_path / "bad.yaml").write_text(base.replace("SNIPPET", snippet))
    with pytest.raises(SuiteError, match=message) as err:
        load_suites(tmp_path)
    assert "bad.yaml" in str(err.value)


def test_settings_from_environment():
    s = QualitySettings.from_env(
        {
            "ALLIANCE_QI_QUALITY_AUTHORED_FLOOR": "2010-06-01",
            "ALLIANCE_QI_QUALITY_MIN_CELL": "6",
            "ALLIANCE_QI_QUALITY_FRESHNESS_MAX_DAYS": "1.5",
        }
    )
    assert (s.authored_floor, s.min_cell, s.freshness_max_days) == (date(2010, 6, 1), 6, 1.5)
    assert s.values({})["small_counts"] == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="ALLIANCE_QI_QUALITY_MIN_CELL"):
        QualitySettings.from_env({"ALLIANCE_QI_QUALITY_MIN_CELL": "eleven"})


def test_count_columns_are_integer_count_names_without_thresholds():
    frame = pd.DataFrame(
        {
            "clinic_key": ["a"],
            "patients": pd.array([12], dtype="Int64"),
            "sessions_attended": [40],
            "phq9_n": [11],
            "mean_alliance": [3.9],
            "reliable_change_threshold": [6],
            "session_number": [3],
            "month": [5],
        }
    )
    extra = next(s for s in load_suites() if s.name == "mart_qi_monthly").extra
    assert count_columns(frame, extra) == ["patients", "sessions_attended", "phq9_n"]


def test_domain_code_imports_neither_dagster_nor_great_expectations():
    code = (
        "import sys\n"
        "import quality_checks.runner, quality_checks.suite, quality_checks.summary, quality_checks.store\n"
        "from quality_checks.suite import load_suites\n"
        "load_suites()\n"
        "bad = [m for m in ('dagster', 'great_expectations') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
