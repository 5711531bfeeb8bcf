"""Hand-computed cases: session numbering, score linking, early alliance, rupture and repair."""

from __future__ import annotations

import pytest

from tests.support.marts_clinic import Clinic, key_of


def _sessions(clinic: Clinic) -> list[tuple]:
    return clinic.rows(
        "SELECT encounter_id, episode_id, episode_basis, session_number FROM staging.sessions "
        "ORDER BY encounter_id"
    )


def test_sessions_are_numbered_within_their_episode_of_care_in_date_order():
    c = Clinic()
    c.patient("p1")
    c.episode("eoc1", "p1", "2026-01-01")
    # inserted out of order; a cancelled encounter is not a session and takes no number
    c.encounter("e3", "p1", "2026-01-15", eoc="eoc1")
    c.encounter("e1", "p1", "2026-01-01", eoc="eoc1")
    c.encounter("e2", "p1", "2026-01-08", eoc="eoc1", status="cancelled")
    c.encounter("e4", "p1", "2026-01-22", eoc="eoc1")
    c.build()
    assert _sessions(c) == [
        ("e1", "eoc1", "episode_of_care", 1),
        ("e3", "eoc1", "episode_of_care", 2),
        ("e4", "eoc1", "episode_of_care", 3),
    ]


def test_gap_rule_starts_a_new_episode_after_more_than_gap_days_without_a_session():
    c = Clinic()
    c.patient("p1")
    c.encounter("e1", "p1", "2026-01-01")
    c.encounter("e2", "p1", "2026-04-01")  # exactly 90 days later: same episode
    c.encounter("e3", "p1", "2026-06-30")  # 90 days after e2: same episode
    c.encounter("e4", "p1", "2026-09-29")  # 91 days after e3: new episode
    c.encounter("e5", "p1", "2026-10-06")
    c.build()
    assert _sessions(c) == [
        ("e1", "gap:p1:2026-01-01", "gap_rule", 1),
        ("e2", "gap:p1:2026-01-01", "gap_rule", 2),
        ("e3", "gap:p1:2026-01-01", "gap_rule", 3),
        ("e4", "gap:p1:2026-09-29", "gap_rule", 1),
        ("e5", "gap:p1:2026-09-29", "gap_rule", 2),
    ]
    # the first gap episode is closed (last session long before the reference date), the second is open
    eps = c.rows("SELECT episode_id, closed, period_end FROM staging.treatment_episodes ORDER BY 1")
    assert [(e, closed) for e, closed, _ in eps] == [
        ("gap:p1:2026-01-01", True),
        ("gap:p1:2026-09-29", False),
    ]


def _attended_visit(c: Clinic, n: int, day: str, eoc: str | None = "eoc1", *, landed: bool = True) -> None:
    """A fulfilled Appointment a<n> and, unless `landed` is false, its finished Encounter e<n>.

    `landed=False` is an Encounter that validation rejected: it went to raw.rejected and never reached
    raw.encounter, while its Appointment did."""
    c.appointment(f"a{n}", "p1", day, "fulfilled")
    if landed:
        c.encounter(f"e{n}", "p1", day, eoc=eoc, appointment=f"a{n}")


def test_a_rejected_encounter_keeps_its_session_number_through_its_fulfilled_appointment():
    c = Clinic()
    c.patient("p1")
    c.episode("eoc1", "p1", "2026-01-01", "2026-03-31")
    _attended_visit(c, 1, "2026-01-05")
    _attended_visit(c, 2, "2026-01-12", landed=False)  # session 2: Encounter rejected
    c.appointment("a-miss", "p1", "2026-01-19", "noshow")  # a missed appointment is no session
    _attended_visit(c, 3, "2026-01-26")
    _attended_visit(c, 4, "2026-02-02")
    c.appointment("a-later", "p1", "2026-05-04", "fulfilled")  # after the episode's period: not its slot
    for enc, mean in (("e1", 4.0), ("e3", 3.0), ("e4", 1.0)):
        c.wai(enc, "p1", mean)
    c.build()
    rows = c.rows(
        "SELECT encounter_id, session_number, unrecorded_sessions_before FROM staging.sessions ORDER BY 1"
    )
    # counting only landed Encounters would give 1, 2, 3 and pull e4 into the sessions 1-3 window
    assert rows == [("e1", 1, 0), ("e3", 3, 1), ("e4", 4, 1)]
    out = c.dicts("SELECT early_alliance, early_alliance_sessions FROM marts.episode_outcomes")[0]
    assert (out["early_alliance"], out["early_alliance_sessions"]) == (3.5, 2)  # e1 and e3, not e4


def test_gap_rule_episodes_count_attended_appointments_between_their_first_and_last_session():
    c = Clinic()
    c.patient("p1")
    _attended_visit(c, 1, "2026-01-05", eoc=None)
    _attended_visit(c, 2, "2026-01-12", eoc=None, landed=False)
    _attended_visit(c, 3, "2026-01-19", eoc=None)
    _attended_visit(c, 4, "2026-02-16", eoc=None, landed=False)  # after the last landed session: unknown
    c.build()
    assert c.rows("SELECT encounter_id, session_number FROM staging.sessions ORDER BY 1") == [
        ("e1", 1),
        ("e3", 3),
    ]


def test_without_appointments_sessions_are_numbered_in_encounter_order():
    c = Clinic()
    c.patient("p1")
    c.episode("eoc1", "p1", "2026-01-01")
    c.encounter("e1", "p1", "2026-01-05", eoc="eoc1")
    c.encounter("e2", "p1", "2026-01-12", eoc="eoc1", appointment="not-landed")
    c.build()
    assert c.rows(
        "SELECT encounter_id, session_number, unrecorded_sessions_before FROM staging.sessions ORDER BY 1"
    ) == [("e1", 1, 0), ("e2", 2, 0)]


def test_gap_days_is_a_setting():
    c = Clinic()
    c.patient("p1")
    c.encounter("e1", "p1", "2026-01-01")
    c.encounter("e2", "p1", "2026-01-31")  # 30 days
    c.build(episode_gap_days=29)
    assert [r[3] for r in _sessions(c)] == [1, 1]


def test_practitioner_role_participant_resolves_to_its_practitioner_and_clinic_falls_back_to_episode():
    c = Clinic()
    c.patient("p1")
    c.add({"resourceType": "PractitionerRole", "id": "r9", "practitioner": {"reference": "Practitioner/t9"}})
    c.episode("eoc1", "p1", "2026-01-01", org="c7")
    c.encounter("e1", "p1", "2026-01-01", eoc="eoc1", practitioner="PractitionerRole/r9", org=None)
    c.build()
    assert c.rows("SELECT practitioner_id, clinic_id FROM staging.sessions") == [("t9", "c7")]
    assert c.rows("SELECT therapist_key, clinic_key FROM marts.alliance_sessions") == [
        (key_of("practitioner", "t9"), key_of("organization", "c7"))
    ]


def test_newest_version_of_a_resource_wins():
    c = Clinic()
    c.patient("p1")
    c.encounter("e1", "p1", "2026-01-01")
    # a later version marks the encounter entered-in-error: no longer a session
    c.add(
        {
            "resourceType": "Encounter",
            "id": "e1",
            "status": "entered-in-error",
            "subject": {"reference": "Patient/p1"},
        },
        version="2",
        last_updated="2026-02-01T00:00:00Z",
    )
    c.build()
    assert _sessions(c) == []


def test_scores_link_by_encounter_newest_authored_wins_and_mismatched_patient_is_not_linked():
    c = Clinic()
    for p in ("p1", "p2"):
        c.patient(p)
    c.encounter("e1", "p1", "2026-01-01")
    c.wai("e1", "p1", 3.0, authored="2026-01-01T11:00:00Z", response_id="old")
    c.wai("e1", "p1", 4.0, authored="2026-01-01T11:05:00Z", response_id="new")  # resubmission
    c.wai("e1", "p2", 1.0, response_id="wrong-patient")  # says encounter e1 but another subject
    c.wai(None, "p1", 2.0, response_id="no-encounter")
    c.wai("e1", "p1", 5.0, response_id="invalid", valid=False)
    c.build()
    assert c.rows("SELECT DISTINCT response_id FROM staging.session_measures") == [("new",)]
    assert c.rows("SELECT wai_sr_mean, wai_sr_total FROM marts.alliance_sessions") == [(4.0, 48.0)]


def test_quarantined_responses_are_left_out():
    c = Clinic()
    c.patient("p1")
    c.encounter("e1", "p1", "2026-01-01")
    c.wai("e1", "p1", 3.0, authored="2026-01-01T11:00:00Z", response_id="ok")
    c.wai("e1", "p1", 4.0, authored="2026-01-01T11:05:00Z", response_id="bad")
    c.con.execute("CREATE SCHEMA quality")
    c.con.execute(
        """CREATE VIEW quality.current_quarantine AS
           SELECT 'staging.measure_scores' AS table_name, 's' AS source, 'bad' AS record_key, 'x' AS reason"""
    )
    c.build()
    # the newer response is quarantined, so the older valid one is used
    assert c.rows("SELECT wai_sr_mean FROM marts.alliance_sessions") == [(3.0,)]


def test_raters_are_kept_apart_and_discrepancy_is_patient_minus_clinician():
    c = Clinic()
    c.patient("p1")
    c.encounter("e1", "p1", "2026-01-01")
    c.wai("e1", "p1", 4.25)
    c.wai_clinician("e1", "p1", 3.5)
    c.total("srs", "e1", "p1", 37)
    c.build()
    row = c.dicts("SELECT * FROM marts.alliance_sessions")[0]
    assert (row["wai_sr_mean"], row["wai_clinician_mean"], row["srs_total"]) == (4.25, 3.5, 37.0)
    assert row["rater_discrepancy"] == pytest.approx(0.75)
    assert row["low_alliance_flag"] is False and row["srs_concern_flag"] is False
    assert row["alliance_measured"] is True


def _series(
    c: Clinic, eoc: str, pid: str, wai: list[float | None], srs: list[float | None] | None = None
) -> None:
    for i, value in enumerate(wai, start=1):
        enc = f"{eoc}-{i}"
        c.encounter(enc, pid, f"2026-03-{i:02d}", eoc=eoc)
        if value is not None:
            c.wai(enc, pid, value)
        srs_value = srs[i - 1] if srs else None
        if srs_value is not None:
            c.total("srs", enc, pid, srs_value)


def _ruptures(c: Clinic, eoc: str) -> list[tuple]:
    return c.rows(
        """SELECT session_number, rupture_flag, rupture_basis, repair_status, repair_flag,
                  repair_session_number
           FROM marts.alliance_sessions WHERE episode_key = ? ORDER BY session_number""",
        [key_of("episode", eoc)],
    )


def test_rupture_is_a_reliable_wai_sr_drop_and_repair_is_a_return_within_two_sessions():
    # registry: WAI-SR reliable_drop 0.75 mean points; repair window 2 sessions
    c = Clinic()
    c.patient("p1")
    c.episode("a", "p1", "2026-03-01", "2026-03-31")
    _series(c, "a", "p1", [4.0, 3.25, 3.5, 4.0])  # drop of exactly 0.75; back to 4.0 two sessions later
    c.episode("b", "p1", "2026-03-01", "2026-03-31")
    _series(c, "b", "p1", [4.0, 3.0, 3.5, 3.9, 4.0])  # back only three sessions later: not repaired
    c.episode("c", "p1", "2026-03-01", "2026-03-31")
    _series(c, "c", "p1", [4.0, 3.3, 3.2])  # drop 0.7, then 0.1: no rupture
    c.episode("d", "p1", "2026-03-01", "2026-03-31")
    _series(c, "d", "p1", [4.0, None, 3.0, 4.2])  # previous *measured* session is session 1
    c.episode("e", "p1", "2026-03-01", "2026-03-31")
    _series(c, "e", "p1", [47 / 12, 38 / 12])  # 9 of the 12-60 sum points: exactly 0.75, as sums / 12
    c.build(rupture_srs_rule="off")
    assert _ruptures(c, "a") == [
        (1, False, None, None, None, None),
        (2, True, "wai_sr_reliable_drop", "repaired", True, 4),
        (3, False, None, None, None, None),
        (4, False, None, None, None, None),
    ]
    assert _ruptures(c, "b")[1] == (2, True, "wai_sr_reliable_drop", "not_repaired", False, None)
    assert [r[1] for r in _ruptures(c, "c")] == [False, False, False]
    assert _ruptures(c, "d")[1][1] is None  # nothing measured at session 2
    assert _ruptures(c, "d")[2] == (3, True, "wai_sr_reliable_drop", "repaired", True, 4)
    assert _ruptures(c, "e")[1][1] is True
    drop = c.rows(
        "SELECT wai_sr_drop, previous_wai_sr_mean, rupture_drop_threshold, sessions_after_rupture "
        "FROM marts.alliance_sessions WHERE episode_key = ? AND session_number = 3",
        [key_of("episode", "d")],
    )
    assert drop == [(1.0, 4.0, 0.75, 1)]
    # b: two sessions followed within the window, neither back at 4.0
    assert c.rows(
        "SELECT sessions_after_rupture FROM marts.alliance_sessions WHERE episode_key = ? AND rupture_flag",
        [key_of("episode", "b")],
    ) == [(2,)]


def test_reliable_drop_comes_from_the_registry_and_a_site_file_overrides_it(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "wai.yaml").write_text("extends: wai_sr\nthresholds: {reliable_drop: 1.0}\n")
    monkeypatch.setenv("ALLIANCE_QI_INSTRUMENTS_DIR", str(site))
    c = Clinic()
    c.patient("p1")
    c.episode("a", "p1", "2026-03-01", "2026-03-31")
    _series(c, "a", "p1", [4.0, 3.25, 2.25])  # 0.75: no longer reliable; 1.0: a rupture
    c.build(rupture_srs_rule="off")
    assert [r[1] for r in _ruptures(c, "a")] == [False, False, True]
    assert c.rows("SELECT DISTINCT rupture_drop_threshold FROM marts.alliance_sessions") == [(1.0,)]


def test_unrepaired_rupture_is_pending_while_the_episode_is_open_and_fewer_sessions_followed():
    c = Clinic()
    c.patient("p1")
    c.episode("open", "p1", "2026-03-01", status="active")
    _series(c, "open", "p1", [4.0, 2.5, 3.0])  # one later session so far
    c.episode("closed", "p1", "2026-03-01", "2026-03-31")
    _series(c, "closed", "p1", [4.0, 2.5])  # ended right after the rupture
    c.build(rupture_srs_rule="off")
    assert _ruptures(c, "open")[1][3:5] == ("pending", None)
    assert _ruptures(c, "closed")[1][3:5] == ("not_repaired", False)
    # and the episode mart counts them, pending apart
    eo = c.rows(
        "SELECT episode_key, ruptures, ruptures_repaired, ruptures_not_repaired, ruptures_pending "
        "FROM marts.episode_outcomes ORDER BY ruptures_pending",
    )
    assert sorted(eo) == sorted(
        [(key_of("episode", "closed"), 1, 0, 1, 0), (key_of("episode", "open"), 1, 0, 0, 1)]
    )


def test_srs_below_its_cut_off_is_a_concern_flag_not_a_rupture():
    c = Clinic()
    c.patient("p1")
    c.episode("a", "p1", "2026-03-01", "2026-03-31")
    # 37 -> 34 falls below 36 (a drop of 3, under the SRS reliable_drop of 5); 34 -> 33 stays below
    _series(c, "a", "p1", [None, None, None, None], srs=[37, 34, 33, 38])
    c.build()
    rows = c.rows(
        "SELECT srs_concern_flag, rupture_flag, srs_drop FROM marts.alliance_sessions "
        "WHERE episode_key = ? ORDER BY session_number",
        [key_of("episode", "a")],
    )
    assert rows == [(False, False, None), (True, False, 3.0), (True, False, 1.0), (False, False, -5.0)]


@pytest.mark.parametrize(
    ("rule", "expected"),
    [("when_no_wai_sr", [False, True, False, False]), ("off", [False, False, False, False])],
)
def test_srs_reliable_drop_is_a_rupture_at_sessions_without_a_wai_sr(rule, expected):
    c = Clinic()
    c.patient("p1")
    c.episode("a", "p1", "2026-03-01", "2026-03-31")
    _series(c, "a", "p1", [None, None, None, None], srs=[38, 32, 35, 38])  # drop 6 >= 5 at session 2
    c.build(rupture_srs_rule=rule)
    assert [r[1] for r in _ruptures(c, "a")] == expected
    if rule == "when_no_wai_sr":
        # repaired when the SRS is back at or above its pre-rupture value (38) within two sessions: s4
        assert _ruptures(c, "a")[1][2:] == ("srs_reliable_drop", "repaired", True, 4)


def test_a_session_with_a_wai_sr_pair_is_judged_on_the_wai_sr_only():
    c = Clinic()
    c.patient("p1")
    c.episode("both", "p1", "2026-03-01", "2026-03-31")
    _series(c, "both", "p1", [4.0, 3.9], srs=[38, 30])  # SRS drops 8 but WAI-SR only 0.1
    c.episode("srs-only-at-2", "p1", "2026-03-01", "2026-03-31")
    _series(c, "srs-only-at-2", "p1", [4.0, None], srs=[38, 30])  # no WAI-SR at session 2: SRS judges
    c.build()
    assert [r[1:3] for r in _ruptures(c, "both")] == [(False, None), (False, None)]
    assert _ruptures(c, "srs-only-at-2")[1][1:3] == (True, "srs_reliable_drop")


def test_repair_groups_leave_pending_ruptures_out():
    import pandas as pd

    from marts.associations import rupture_repair_groups

    episodes = pd.DataFrame(
        [
            # episode, ruptures, repaired, not repaired, pending
            ("all-repaired", 2, 2, 0, 0),
            ("repaired-and-pending", 2, 1, 0, 1),  # neither group: its last rupture may yet be repaired
            ("unrepaired-and-pending", 2, 0, 1, 1),  # an unrepaired rupture makes it unrepaired
            ("only-pending", 1, 0, 0, 1),
            ("no-rupture", 0, 0, 0, 0),
        ],
        columns=["episode_key", "ruptures", "ruptures_repaired", "ruptures_not_repaired", "ruptures_pending"],
    )
    repaired, unrepaired, pending = rupture_repair_groups(episodes)
    assert list(repaired.episode_key) == ["all-repaired"]
    assert list(unrepaired.episode_key) == ["unrepaired-and-pending"]
    assert list(pending.episode_key) == ["repaired-and-pending", "only-pending"]


def test_early_alliance_is_the_mean_patient_wai_over_sessions_one_to_three():
    c = Clinic()
    c.patient("p1")
    c.episode("a", "p1", "2026-03-01", "2026-03-31")
    _series(c, "a", "p1", [3.0, 4.0, None, 5.0])  # session 3 not measured, session 4 not early
    for i, v in ((1, 2.0), (2, 3.0), (3, 4.5), (4, 1.0)):
        c.wai_clinician(f"a-{i}", "p1", v)
    c.build()
    row = c.dicts(
        "SELECT early_alliance, early_alliance_sessions, early_alliance_clinician, mean_alliance_patient "
        "FROM marts.episode_outcomes"
    )[0]
    assert row["early_alliance"] == pytest.approx(3.5)
    assert row["early_alliance_sessions"] == 2
    assert row["early_alliance_clinician"] == pytest.approx((2.0 + 3.0 + 4.5) / 3)
    assert row["mean_alliance_patient"] == pytest.approx(4.0)
    c2 = Clinic()
    c2.patient("p1")
    c2.episode("a", "p1", "2026-03-01", "2026-03-31")
    _series(c2, "a", "p1", [3.0, 4.0, None, 5.0])
    c2.build(early_sessions=4)
    assert c2.rows("SELECT early_alliance FROM marts.episode_outcomes") == [(4.0,)]
