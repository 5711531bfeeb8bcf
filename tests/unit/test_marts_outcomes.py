"""Hand-computed cases: reliable change, recovery (NHS Talking Therapies), response, remission, ORS,
attendance and dropout in marts.episode_outcomes."""

from __future__ import annotations

import pytest

from tests.support.marts_clinic import Clinic, key_of

OUTCOME_COLS = (
    "case_at_start, outcome_complete, phq9_change, gad7_change, reliable_improvement, "
    "reliable_deterioration, "
    "recovery, reliable_recovery, phq9_response, phq9_remission"
)


def _episode(c: Clinic, eoc: str, phq: list[float | None], gad: list[float | None]) -> None:
    c.episode(eoc, "p1", "2026-02-01", "2026-04-30")
    for i, (p, g) in enumerate(zip(phq, gad, strict=True), start=1):
        enc = f"{eoc}-{i}"
        c.encounter(enc, "p1", f"2026-02-{i * 3:02d}", eoc=eoc)
        if p is not None:
            c.total("phq9", enc, "p1", p)
        if g is not None:
            c.total("gad7", enc, "p1", g)


def _outcome(c: Clinic, eoc: str) -> tuple:
    return c.rows(
        f"SELECT {OUTCOME_COLS} FROM marts.episode_outcomes WHERE episode_key = ?", [key_of("episode", eoc)]
    )[0]


@pytest.mark.parametrize(
    ("phq", "gad", "expected"),
    [
        # PHQ-9 drops by exactly the reliable change (6); GAD-7 rises by 3 (< 4): reliable improvement,
        # but PHQ-9 14 is still at caseness: not recovered.
        ([20, 17, 14], [10, 12, 13], (True, True, -6.0, 3.0, True, False, False, False, False, False)),
        # both below caseness at the end, both drops reliable: recovery and reliable recovery;
        # PHQ-9 15 -> 7 drops 8 >= 7.5 (response) but 7 is not below 5 (no remission)
        ([15, None, 7], [12, 9, 6], (True, True, -8.0, -6.0, True, False, True, True, True, False)),
        # mixed: PHQ-9 improves reliably (-8), GAD-7 deteriorates reliably (+5): neither
        ([12, 4], [5, 10], (True, True, -8.0, 5.0, False, False, False, False, True, True)),
        # not a case at start (PHQ-9 8 < 10, GAD-7 6 < 8): recovery does not apply; response/remission
        # are defined for PHQ-9 cases only
        ([8, 2], [6, 1], (False, True, -6.0, -5.0, True, False, None, None, None, None)),
        # one PHQ-9 only: no paired score, nothing judged
        ([18, None], [None, None], (True, False, None, None, None, None, None, None, None, None)),
        # GAD-7 has a baseline but no end score: outcome incomplete (NHS TT needs both pairs)
        ([18, 6], [12, None], (True, False, -12.0, None, None, None, None, None, True, False)),
        # reliable deterioration on PHQ-9 only
        ([10, 16], [9, 9], (True, True, 6.0, 0.0, False, True, False, False, False, False)),
    ],
)
def test_nhs_talking_therapies_outcomes(phq, gad, expected):
    c = Clinic()
    c.patient("p1")
    _episode(c, "a", phq, gad)
    c.build()
    assert _outcome(c, "a") == expected


def test_response_is_a_half_drop_and_remission_below_five():
    c = Clinic()
    c.patient("p1")
    _episode(c, "a", [20, 10], [None, None])  # drop 10 >= 0.5 * 20; 10 is not < 5
    _episode(c, "b", [14, 4], [None, None])
    c.build()
    rows = c.rows(
        "SELECT episode_key, phq9_response, phq9_remission, phq9_baseline, phq9_last, phq9_n "
        "FROM marts.episode_outcomes"
    )
    got = {k: v for k, *v in rows}
    assert got[key_of("episode", "a")] == [True, False, 20.0, 10.0, 2]
    assert got[key_of("episode", "b")] == [True, True, 14.0, 4.0, 2]


def test_thresholds_come_from_the_registry_and_are_recorded_beside_rows(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "phq9_site.yaml").write_text("extends: phq9\nthresholds: {reliable_change: 8, caseness: 12}\n")
    monkeypatch.setenv("ALLIANCE_QI_INSTRUMENTS_DIR", str(site))
    c = Clinic()
    c.patient("p1")
    _episode(c, "a", [20, 14], [None, None])  # drop 6: reliable under the default 6, not under 8
    c.build()
    row = c.dicts("SELECT * FROM marts.episode_outcomes")[0]
    assert row["phq9_reliable_improvement"] is False
    assert (row["phq9_reliable_change"], row["phq9_caseness"], row["gad7_reliable_change"]) == (
        8.0,
        12.0,
        4.0,
    )
    assert row["recovery"] is False  # 14 >= 12 still a case


def test_ors_change_reliable_improvement_and_clinically_significant_improvement():
    c = Clinic()
    c.patient("p1")
    c.episode("a", "p1", "2026-02-01", "2026-04-30")
    for i, v in enumerate([18, 22, 26], start=1):
        c.encounter(f"a-{i}", "p1", f"2026-02-0{i}", eoc="a")
        c.total("ors", f"a-{i}", "p1", v)
    c.build()
    row = c.dicts("SELECT * FROM marts.episode_outcomes")[0]
    assert (row["ors_baseline"], row["ors_last"], row["ors_change"]) == (18.0, 26.0, 8.0)
    assert row["ors_reliable_improvement"] is True and row["ors_reliable_deterioration"] is False
    assert row["ors_clinically_significant_improvement"] is True  # from below 25 to 25+, reliably


def test_attendance_and_dropout():
    c = Clinic()
    c.patient("p1")
    # closed episode: 3 attended, 1 no-show, then a final cancellation: unplanned ending
    c.episode("a", "p1", "2026-02-01", "2026-03-10")
    for i, day in enumerate(["2026-02-02", "2026-02-09", "2026-02-23"], start=1):
        c.encounter(f"a-{i}", "p1", day, eoc="a")
        c.appointment(f"ap-{i}", "p1", day, "fulfilled")
    c.appointment("ap-ns", "p1", "2026-02-16", "noshow")
    c.appointment("ap-cx", "p1", "2026-03-02", "cancelled")
    c.appointment("ap-booked", "p1", "2026-03-05", "booked")  # neither attended nor missed: not counted
    # a later episode with a planned ending (its last appointment attended)
    c.episode("b", "p1", "2026-06-01", "2026-06-30")
    c.encounter("b-1", "p1", "2026-06-01", eoc="b")
    c.appointment("bp-1", "p1", "2026-06-01", "noshow")
    c.appointment("bp-2", "p1", "2026-06-08", "fulfilled")
    # an open episode: dropout not yet known
    c.episode("c", "p1", "2026-09-01", status="active")
    c.appointment("cp-1", "p1", "2026-09-01", "noshow")
    c.build()
    got = {
        r[0]: r[1:]
        for r in c.rows(
            """SELECT episode_key, appointments_booked, appointments_attended, appointments_noshow,
                      appointments_cancelled, attendance_rate, unplanned_ending, dropout, sessions_attended
               FROM marts.episode_outcomes"""
        )
    }
    assert got[key_of("episode", "a")] == (5, 3, 1, 1, 0.6, True, True, 3)
    assert got[key_of("episode", "b")] == (2, 1, 1, 0, 0.5, False, False, 1)
    assert got[key_of("episode", "c")] == (1, 0, 1, 0, 0.0, None, None, 0)
    # dropout is the unplanned ending whatever the number of sessions: ten sessions, then two no-shows
    c2 = Clinic()
    c2.patient("p1")
    c2.episode("long", "p1", "2026-01-01", "2026-04-30")
    for i in range(1, 11):
        day = f"2026-01-{i * 2:02d}"
        c2.encounter(f"l-{i}", "p1", day, eoc="long")
        c2.appointment(f"lp-{i}", "p1", day, "fulfilled")
    c2.appointment("lp-ns1", "p1", "2026-02-01", "noshow")
    c2.appointment("lp-ns2", "p1", "2026-02-08", "noshow")
    # a cancelled EpisodeOfCare is an unplanned ending even without appointments
    c2.episode("cx", "p1", "2026-06-01", "2026-06-30", status="cancelled")
    c2.encounter("cx-1", "p1", "2026-06-01", eoc="cx")
    # finished, no appointments: the ending is unknown
    c2.episode("unknown", "p1", "2026-08-01", "2026-08-30")
    c2.encounter("u-1", "p1", "2026-08-01", eoc="unknown")
    c2.build()
    got = {
        r[0]: r[1:]
        for r in c2.rows(
            "SELECT episode_key, sessions_attended, unplanned_ending, dropout FROM marts.episode_outcomes"
        )
    }
    assert got[key_of("episode", "long")] == (10, True, True)
    assert got[key_of("episode", "cx")] == (1, True, True)
    assert got[key_of("episode", "unknown")] == (1, None, None)


@pytest.mark.parametrize(
    ("phq", "window", "expected"),
    [
        # baseline at session 1
        ([15, None, 9], {}, (15.0, 9.0, 1, False, True)),
        # session 1 missing: session 2 is still in the window (sessions 1-2)
        ([None, 15, 9], {}, (15.0, 9.0, 2, False, True)),
        # first PHQ-9 at session 3: outside the window, no baseline, the outcome is incomplete (the old
        # rule took 15 as the baseline and reported a change of -6)
        ([None, None, 15, 9], {}, (None, None, None, True, False)),
        # a wider declared window takes it
        ([None, None, 15, 9], {"baseline_window_sessions": 3}, (15.0, 9.0, 3, False, True)),
        # days from the episode start (2026-02-01): session 3 is on 02-09, 8 days in
        ([None, None, 15, 9], {"baseline_window_days": 7}, (None, None, None, True, False)),
        ([None, None, 15, 9], {"baseline_window_days": 8}, (15.0, 9.0, 3, False, True)),
        # a single in-window score has no later pair
        ([15], {}, (15.0, None, 1, False, False)),
    ],
)
def test_baseline_only_within_the_declared_window(phq, window, expected):
    c = Clinic()
    c.patient("p1")
    _episode(c, "a", phq, [None] * len(phq))
    c.build(**window)
    assert c.rows(
        "SELECT phq9_baseline, phq9_last, phq9_baseline_session, baseline_outside_window, outcome_complete "
        "FROM marts.episode_outcomes"
    ) == [expected]
    recorded = c.rows("SELECT baseline_window_sessions, baseline_window_days FROM marts.episode_outcomes")
    assert recorded == [(window.get("baseline_window_sessions", 2), window.get("baseline_window_days"))]


def test_episode_mart_carries_pseudonyms_age_band_and_no_ids_or_names():
    c = Clinic()
    c.patient("p1", birth="1990-07-01")
    c.episode("a", "p1", "2026-02-01", "2026-03-01")
    c.encounter("a-1", "p1", "2026-02-01", eoc="a")
    c.build()
    row = c.dicts("SELECT * FROM marts.episode_outcomes")[0]
    assert row["patient_key"] == key_of("patient", "p1")
    assert row["age_band_at_start"] == "35-44"  # 35 on 2026-02-01
    texts = {v for v in row.values() if isinstance(v, str)}
    assert not texts & {"p1", "a", "a-1", "c1", "t1"}  # no FHIR ids
    assert not any("Secret" in t or "/" in t for t in texts)  # no names, no references
    assert not any("birth" in col for col in row)
