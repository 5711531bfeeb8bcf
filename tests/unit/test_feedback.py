"""Expected-response curves, the not-on-track judgement and its marts (marts/feedback.py)."""

from __future__ import annotations

import itertools
import re
import shutil
from pathlib import Path

import duckdb
import pytest

from demo.generator import GeneratorConfig, generate
from marts.build import make_context
from marts.feedback import (
    EMPIRICAL,
    INSUFFICIENT,
    NOT_ON_TRACK,
    ON_TRACK,
    OUTCOME_BY_ID,
    RULE_BASED,
    Trajectory,
    fit_curves,
    isotonic,
    judge,
    quantile,
    trajectories,
    validate,
)
from marts.settings import Thresholds, load_mart_settings
from tests.support.generated_warehouse import FHIR_ID_PATTERNS, KEY, PATIENTS, SEED, generated_warehouse_file

SETTINGS = load_mart_settings(env={}, feedback_min_cell_n=5, feedback_horizon_sessions=4)


def test_quantile_interpolates_between_order_statistics() -> None:
    assert quantile([1, 2, 3, 4], 0.5) == 2.5
    assert quantile([10, 0, 5], 0.75) == 7.5
    assert quantile([3], 0.25) == 3


def test_isotonic_pools_violators_into_their_weighted_mean() -> None:
    assert isotonic([5, 4, 6, 3], [1, 1, 1, 1], increasing=False) == [5, 5, 5, 3]
    assert isotonic([1, 3, 2, 4], [1, 3, 1, 1], increasing=True) == [1, 2.75, 2.75, 4]
    out = isotonic([9, 7, 8, 8, 2], [2, 1, 1, 5, 1], increasing=False)
    assert all(a >= b for a, b in itertools.pairwise(out))


def test_bands_follow_published_severity_bands() -> None:
    phq9 = OUTCOME_BY_ID["phq9"]
    assert [phq9.band(x) for x in (0, 4, 5, 14, 15, 27)] == ["0-4", "0-4", "5-9", "10-14", "15-19", "20+"]
    assert OUTCOME_BY_ID["ors"].band(24) == "20-24" and OUTCOME_BY_ID["ors"].band(31) == "25+"


def _traj(i: int, baseline: float, later: list[tuple[int, float]], instrument: str = "phq9") -> Trajectory:
    return Trajectory(
        "s", f"e{i}", instrument, baseline, 1, tuple((s, y, f"qr{i}-{s}", "2026-01-01") for s, y in later)
    )


def test_curves_need_min_cell_n_and_are_monotone_over_sessions() -> None:
    # session 3: scores 10..19 (a band of 16-19 baselines); session 5: higher on purpose (a violation)
    train = [_traj(i, 17, [(3, 10 + i), (5, 12 + i)]) for i in range(10)]
    train += [_traj(100 + i, 17, [(7, 5.0)]) for i in range(3)]  # a thin cell: not fitted
    curves = fit_curves(train, SETTINGS)
    assert set(curves.cells) == {("phq9", "15-19", 3), ("phq9", "15-19", 5)}
    c3, c5 = curves.cells[("phq9", "15-19", 3)], curves.cells[("phq9", "15-19", 5)]
    assert c3.n == c5.n == 10
    assert c5.p50 <= c3.p50 and c5.boundary <= c3.boundary  # pooled: never expected to get worse
    assert c3.p25 <= c3.p50 <= c3.p75


def test_judge_empirical_rule_based_and_insufficient() -> None:
    thresholds = Thresholds()
    train = [_traj(i, 17, [(3, 10 + i % 5)]) for i in range(20)]  # session 3 scores 10..14
    curves = fit_curves(train, SETTINGS)
    boundary = curves.cells[("phq9", "15-19", 3)].boundary
    worse = judge(_traj(1, 17, [(3, boundary + 1)]), curves, thresholds, SETTINGS)
    better = judge(_traj(2, 17, [(3, boundary - 1)]), curves, thresholds, SETTINGS)
    assert (worse.flag, worse.method) == (NOT_ON_TRACK, EMPIRICAL)
    assert (better.flag, better.method) == (ON_TRACK, EMPIRICAL)
    # no cell at session 4: the rules decide (reliable change 6); the horizon is session 4
    stalled = judge(_traj(3, 17, [(4, 14)]), curves, thresholds, SETTINGS)
    improving = judge(_traj(4, 17, [(4, 10)]), curves, thresholds, SETTINGS)
    deteriorated = judge(_traj(5, 8, [(2, 14)]), curves, thresholds, SETTINGS)
    early = judge(_traj(6, 8, [(2, 9)]), curves, thresholds, SETTINGS)
    assert (stalled.flag, stalled.method) == (NOT_ON_TRACK, RULE_BASED)
    assert (improving.flag, improving.method) == (ON_TRACK, RULE_BASED)
    assert deteriorated.flag == NOT_ON_TRACK and early.flag == ON_TRACK
    assert judge(_traj(7, 17, []), curves, thresholds, SETTINGS).flag == INSUFFICIENT
    assert judge(None, curves, thresholds, SETTINGS).flag == INSUFFICIENT
    # ORS: higher is better, so worse means below the lower boundary
    ors_train = [_traj(i, 18, [(3, 20 + i % 5)], "ors") for i in range(20)]
    ors_curves = fit_curves(ors_train, SETTINGS)
    low = ors_curves.cells[("ors", "15-19", 3)].boundary - 1
    assert judge(_traj(8, 18, [(3, low)], "ors"), ors_curves, thresholds, SETTINGS).flag == NOT_ON_TRACK


def test_trajectories_take_the_baseline_only_inside_its_window() -> None:
    rows = [
        {"source": "s", "episode_id": "a", "instrument": "phq9", "session_number": n, "score": y}
        | {"response_id": f"r{n}", "session_date": "2026-01-01"}
        for n, y in ((1, 15), (3, 12), (6, 9))
    ]
    late = [{**r, "episode_id": "b"} for r in rows if r["session_number"] > 1]
    out = trajectories([*rows, *late], baseline_window_sessions=2)
    assert out[("s", "a", "phq9")].baseline == 15 and [x[0] for x in out[("s", "a", "phq9")].later] == [3, 6]
    assert out[("s", "b", "phq9")].baseline is None and out[("s", "b", "phq9")].later == ()


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generated_warehouse_file(tmp_path_factory)


def test_not_on_track_mart_is_one_row_per_open_episode_with_pseudonyms_only(warehouse: Path) -> None:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        open_episodes = con.execute(
            "SELECT count(*) FROM staging.treatment_episodes WHERE NOT closed"
        ).fetchone()
        rows = con.execute("SELECT * FROM marts.not_on_track").fetchall()
        cols = [d[0] for d in con.description or ()]
        flags = dict(con.execute("SELECT flag, count(*) FROM marts.not_on_track GROUP BY flag").fetchall())
        report = con.execute("SELECT * FROM marts.report_not_on_track").fetchall()
        report_cols = [d[0] for d in con.description or ()]
    assert open_episodes is not None and len(rows) == open_episodes[0] > 0
    assert set(flags) <= {NOT_ON_TRACK, ON_TRACK, INSUFFICIENT} and flags.get(NOT_ON_TRACK, 0) > 0
    text = " ".join(str(v) for row in rows for v in row)
    for pattern in FHIR_ID_PATTERNS:
        assert not re.search(pattern, text), pattern
    assert "episode_key" in cols and "patient_id" not in cols
    # the report row: every count either 0, at least min_cell, or suppressed (NULL)
    (row,) = report
    values = dict(zip(report_cols, row, strict=True))
    for c in ("open_episodes", "not_on_track", "on_track", "insufficient_data", "alliance_drop_alerts"):
        assert values[c] is None or values[c] == 0 or values[c] >= values["min_cell"], c


def test_validation_trains_earlier_and_scores_against_outcome_and_planted_truth(
    warehouse: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "w.duckdb"
    shutil.copy(warehouse, copy)
    truth = generate(GeneratorConfig(patients=PATIENTS, seed=SEED)).manifest["truth"]["episodes"]
    planted = {k: bool(v["planted_not_on_track"]) for k, v in truth.items()}
    assert 0 < sum(planted.values()) < len(planted)
    with duckdb.connect(str(copy)) as con:
        result = validate(con, make_context(load_mart_settings(env={}), KEY), planted=planted)
    assert result["train_episodes"] + result["test_episodes"] == result["closed_episodes"]
    for target in (result["no_reliable_improvement"], result["planted"]):
        assert 0 <= target["true_positives"] <= min(target["flagged"], target["positives"])
        assert target["episodes"] > 0
    outcome = result["no_reliable_improvement"]
    # the flag is informative: those flagged fail to improve more often than the test episodes do
    assert outcome["ppv"] > outcome["positives"] / outcome["episodes"]
